//! TLS for the `tls` and `wss` listeners: building a `rustls::ServerConfig` from PEM files,
//! client-certificate verification, the username a client certificate stands for, and a
//! holder that swaps in a new config on reload (SIGHUP) and keeps the old one if the new
//! files are bad.
//!
//! This module reads certificate files, which makes it the one exception to "only `config/`
//! reads files": certificates must be re-read on reload without re-reading the whole config.
//! The TLS state of a connection (`rustls::ServerConnection`) belongs to the worker that
//! owns the socket; this module only hands out the shared `Arc<ServerConfig>` each new
//! connection is created from. WebSocket framing over TLS is `ws.rs`.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCerts {
    /// No client certificates are asked for.
    #[default]
    None,
    /// Asked for; a client without one may still connect (and then authenticates with a
    /// password), but a certificate that is sent must verify against the CA.
    Optional,
    /// Every client must present a certificate that verifies against the CA.
    Require,
}

/// Which part of a verified client certificate becomes the MQTT username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameFrom {
    /// The first Common Name of the subject.
    CommonName,
    /// The first DNS name, e-mail address or URI in the Subject Alternative Name extension.
    SubjectAltName,
}

/// What one TLS listener needs, as resolved by `config/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM file with the server certificate, then its intermediates.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to; required
    /// unless `client_certs` is `None`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate policy.
    pub client_certs: ClientCerts,
    /// ALPN protocols to offer, most preferred first (empty: no ALPN).
    pub alpn: Vec<Vec<u8>>,
}

impl TlsSettings {
    /// Settings for a server certificate and key, without client certificates or ALPN.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            ca_file: None,
            client_certs: ClientCerts::None,
            alpn: Vec::new(),
        }
    }
}

/// Why a TLS configuration could not be built. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be opened or read, or its PEM could not be parsed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O or PEM error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate found in {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("no private key found in {}", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// Client certificates are asked for but no CA file is configured.
    #[error("client certificates are enabled but no ca_file is set")]
    MissingCaFile,
    /// A CA certificate was rejected, or the CA file held none.
    #[error("bad CA certificates in {}", path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// What rustls said, if it said anything.
        #[source]
        source: Option<rustls::server::VerifierBuilderError>,
    },
    /// The certificate and key were refused (unsupported key type, or they do not match).
    #[error("cannot use certificate {} with key {}", cert.display(), key.display())]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the protocol version set (a build problem, not a config one).
    #[error("TLS protocol versions unavailable")]
    Versions(#[source] rustls::Error),
}

/// Builds a server config for TLS 1.2 and 1.3 with the `ring` provider.
///
/// # Errors
/// A [`TlsError`] naming the file that could not be read or used.
pub fn build_server_config(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let chain = load_certs(&settings.cert_file)?;
    let key = load_key(&settings.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Versions)?;
    let builder = match settings.client_certs {
        ClientCerts::None => builder.with_no_client_auth(),
        policy => {
            let ca_file = settings.ca_file.as_deref().ok_or(TlsError::MissingCaFile)?;
            let roots = load_roots(ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if policy == ClientCerts::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::BadCa { path: ca_file.to_owned(), source: Some(e) })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|source| TlsError::CertKey {
        cert: settings.cert_file.clone(),
        key: settings.key_file.clone(),
        source,
    })?;
    config.alpn_protocols = settings.alpn.clone();
    Ok(config)
}

fn open(path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// Every certificate in a PEM file, in order.
///
/// # Errors
/// [`TlsError::Read`] or [`TlsError::NoCertificate`].
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
///
/// # Errors
/// [`TlsError::Read`] or [`TlsError::NoPrivateKey`].
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| TlsError::Read { path: path.to_owned(), source })?
        .ok_or_else(|| TlsError::NoPrivateKey { path: path.to_owned() })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|_| TlsError::BadCa { path: path.to_owned(), source: None })?;
    }
    Ok(roots)
}

/// The username a certificate stands for, or `None` if it has no such name (or does not
/// parse, which cannot happen for a certificate rustls has verified).
pub fn username_from_cert(cert: &CertificateDer<'_>, from: UsernameFrom) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    match from {
        UsernameFrom::CommonName => {
            parsed.subject().iter_common_name().next()?.as_str().ok().map(str::to_owned)
        }
        UsernameFrom::SubjectAltName => {
            let san = parsed.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    Some((*s).to_owned())
                }
                _ => None,
            })
        }
    }
}

/// The username of a connection's verified client certificate, once the handshake is
/// done; `None` without a client certificate.
pub fn peer_username(conn: &ServerConnection, from: UsernameFrom) -> Option<String> {
    username_from_cert(conn.peer_certificates()?.first()?, from)
}

/// The current server config of one listener, replaceable while connections run.
///
/// Workers take [`ReloadableTlsConfig::current`] when they accept a socket; connections
/// already established keep the config they started with, so a reload never drops a
/// client. Share it as `Arc<ReloadableTlsConfig>`.
#[derive(Debug)]
pub struct ReloadableTlsConfig {
    settings: RwLock<TlsSettings>,
    /// Held only for the time of an `Arc` clone or swap: never across I/O.
    current: RwLock<Arc<ServerConfig>>,
}

impl ReloadableTlsConfig {
    /// Builds the first config.
    ///
    /// # Errors
    /// As [`build_server_config`]: at start-up a bad file is fatal.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let config = build_server_config(&settings)?;
        Ok(Self { settings: RwLock::new(settings), current: RwLock::new(Arc::new(config)) })
    }

    /// The config for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Re-reads the files named by the current settings and swaps the config in.
    ///
    /// # Errors
    /// If any file is bad the old config stays in place and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let settings = self.settings.read().clone();
        self.replace(settings)
    }

    /// Builds a config from new settings (a changed config file) and swaps it in.
    ///
    /// # Errors
    /// As [`ReloadableTlsConfig::reload`]: on failure nothing changes.
    pub fn replace(&self, settings: TlsSettings) -> Result<(), TlsError> {
        let config = Arc::new(build_server_config(&settings)?);
        *self.current.write() = config;
        *self.settings.write() = settings;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rustls::pki_types::ServerName;
    use rustls::ClientConfig;
    use std::io::Write;

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    struct Leaf {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn leaf(ca: &Ca, cn: &str, sans: &[&str], client: bool, expired: bool) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        Leaf { cert: params.signed_by(&key, &ca.cert, &ca.key).unwrap(), key }
    }

    /// A directory with `ca.pem`, `server.pem`, `server.key`.
    struct Files {
        dir: tempfile::TempDir,
        ca: Ca,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca = ca("Shoal test CA");
            let server = leaf(&ca, "localhost", &["localhost"], false, false);
            write(&dir.path().join("ca.pem"), &ca.cert.pem());
            write(&dir.path().join("server.pem"), &server.cert.pem());
            write(&dir.path().join("server.key"), &server.key.serialize_pem());
            Self { dir, ca }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn settings(&self, client_certs: ClientCerts) -> TlsSettings {
            TlsSettings {
                ca_file: (client_certs != ClientCerts::None).then(|| self.path("ca.pem")),
                client_certs,
                ..TlsSettings::new(self.path("server.pem"), self.path("server.key"))
            }
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::File::create(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    fn client_config(ca: &Ca, client: Option<&Leaf>) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
        match client {
            None => builder.with_no_client_auth(),
            Some(l) => builder
                .with_client_auth_cert(
                    vec![l.cert.der().clone()],
                    rustls::pki_types::PrivatePkcs8KeyDer::from(l.key.serialize_der()).into(),
                )
                .unwrap(),
        }
    }

    /// Runs a handshake in memory and exchanges one application byte each way, so that a
    /// TLS 1.3 server's verdict on the client certificate reaches both sides.
    fn handshake(
        server: Arc<ServerConfig>,
        client: ClientConfig,
    ) -> Result<ServerConnection, rustls::Error> {
        let mut s = ServerConnection::new(server)?;
        let mut c = rustls::ClientConnection::new(
            Arc::new(client),
            ServerName::try_from("localhost").unwrap(),
        )?;
        c.writer().write_all(b"c").unwrap();
        let mut got_server_byte = false;
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            if !s.is_handshaking() {
                s.writer().write_all(b"s").unwrap();
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            let mut byte = [0u8; 1];
            if std::io::Read::read(&mut c.reader(), &mut byte).is_ok_and(|n| n == 1) {
                got_server_byte = true;
            }
            if got_server_byte && !s.is_handshaking() && !c.is_handshaking() {
                return Ok(s);
            }
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    #[test]
    fn plain_tls_handshake_succeeds() {
        let f = Files::new();
        let config = build_server_config(&f.settings(ClientCerts::None)).unwrap();
        let s = handshake(Arc::new(config), client_config(&f.ca, None)).unwrap();
        assert!(s.peer_certificates().is_none());
    }

    #[test]
    fn tls12_and_alpn_are_offered() {
        let f = Files::new();
        let mut settings = f.settings(ClientCerts::None);
        settings.alpn = vec![b"mqtt".to_vec()];
        let config = Arc::new(build_server_config(&settings).unwrap());
        let mut client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates({
                    let mut r = RootCertStore::empty();
                    r.add(f.ca.cert.der().clone()).unwrap();
                    r
                })
                .with_no_client_auth();
        client.alpn_protocols = vec![b"mqtt".to_vec()];
        let s = handshake(config, client).unwrap();
        assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        assert_eq!(s.alpn_protocol(), Some(&b"mqtt"[..]));
    }

    #[test]
    fn mutual_tls_with_a_valid_client_cert_succeeds_and_names_the_user() {
        let f = Files::new();
        let client = leaf(&f.ca, "alice", &["alice.example"], true, false);
        let config = Arc::new(build_server_config(&f.settings(ClientCerts::Require)).unwrap());
        let s = handshake(config, client_config(&f.ca, Some(&client))).unwrap();
        assert_eq!(peer_username(&s, UsernameFrom::CommonName).as_deref(), Some("alice"));
        assert_eq!(
            peer_username(&s, UsernameFrom::SubjectAltName).as_deref(),
            Some("alice.example")
        );
    }

    #[test]
    fn required_client_cert_missing_is_refused() {
        let f = Files::new();
        let config = Arc::new(build_server_config(&f.settings(ClientCerts::Require)).unwrap());
        let err = handshake(config, client_config(&f.ca, None)).unwrap_err();
        assert!(
            matches!(err, rustls::Error::NoCertificatesPresented | rustls::Error::AlertReceived(_)),
            "{err:?}"
        );
    }

    #[test]
    fn optional_client_cert_may_be_absent() {
        let f = Files::new();
        let config = Arc::new(build_server_config(&f.settings(ClientCerts::Optional)).unwrap());
        let s = handshake(config.clone(), client_config(&f.ca, None)).unwrap();
        assert_eq!(peer_username(&s, UsernameFrom::CommonName), None);
        let client = leaf(&f.ca, "bob", &[], true, false);
        let s = handshake(config, client_config(&f.ca, Some(&client))).unwrap();
        assert_eq!(peer_username(&s, UsernameFrom::CommonName).as_deref(), Some("bob"));
    }

    #[test]
    fn client_cert_from_another_ca_is_refused() {
        let f = Files::new();
        let other = ca("Some other CA");
        let client = leaf(&other, "mallory", &[], true, false);
        for policy in [ClientCerts::Require, ClientCerts::Optional] {
            let config = Arc::new(build_server_config(&f.settings(policy)).unwrap());
            let err = handshake(config, client_config(&f.ca, Some(&client))).unwrap_err();
            assert!(
                matches!(
                    err,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                        | rustls::Error::AlertReceived(_)
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn expired_client_cert_is_refused() {
        let f = Files::new();
        let client = leaf(&f.ca, "old", &[], true, true);
        let config = Arc::new(build_server_config(&f.settings(ClientCerts::Require)).unwrap());
        let err = handshake(config, client_config(&f.ca, Some(&client))).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                ) | rustls::Error::AlertReceived(_)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn username_from_cn_and_san() {
        let ca = ca("ca");
        let with_san = leaf(&ca, "device-17", &["device-17.fleet.example"], true, false);
        let der = with_san.cert.der();
        assert_eq!(username_from_cert(der, UsernameFrom::CommonName).as_deref(), Some("device-17"));
        assert_eq!(
            username_from_cert(der, UsernameFrom::SubjectAltName).as_deref(),
            Some("device-17.fleet.example")
        );
        let no_san = leaf(&ca, "plain", &[], true, false);
        assert_eq!(username_from_cert(no_san.cert.der(), UsernameFrom::SubjectAltName), None);
        assert_eq!(
            username_from_cert(&CertificateDer::from(vec![1, 2, 3]), UsernameFrom::CommonName),
            None
        );
    }

    #[test]
    fn errors_name_the_file() {
        let f = Files::new();
        let missing = TlsSettings::new(f.path("nope.pem"), f.path("server.key"));
        let err = build_server_config(&missing).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");

        write(&f.path("empty.pem"), "");
        let err = build_server_config(&TlsSettings::new(f.path("empty.pem"), f.path("server.key")))
            .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");

        let err =
            build_server_config(&TlsSettings::new(f.path("server.pem"), f.path("server.pem")))
                .unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
        assert!(err.to_string().contains("server.pem"));

        let mut no_ca = f.settings(ClientCerts::Require);
        no_ca.ca_file = None;
        assert!(matches!(build_server_config(&no_ca), Err(TlsError::MissingCaFile)));

        let mut empty_ca = f.settings(ClientCerts::Require);
        empty_ca.ca_file = Some(f.path("empty.pem"));
        assert!(build_server_config(&empty_ca).unwrap_err().to_string().contains("empty.pem"));

        let other = leaf(&f.ca, "x", &["localhost"], false, false);
        write(&f.path("other.key"), &other.key.serialize_pem());
        let err = build_server_config(&TlsSettings::new(f.path("server.pem"), f.path("other.key")))
            .unwrap_err();
        assert!(matches!(err, TlsError::CertKey { .. }), "{err:?}");
    }

    #[test]
    fn reload_swaps_the_config_and_keeps_the_old_one_on_failure() {
        let f = Files::new();
        let holder = ReloadableTlsConfig::new(f.settings(ClientCerts::None)).unwrap();
        let first = holder.current();

        // A new certificate from the same CA: the reload succeeds and new connections use it.
        let renewed = leaf(&f.ca, "localhost", &["localhost"], false, false);
        write(&f.path("server.pem"), &renewed.cert.pem());
        write(&f.path("server.key"), &renewed.key.serialize_pem());
        holder.reload().unwrap();
        let second = holder.current();
        assert!(!Arc::ptr_eq(&first, &second));
        handshake(second.clone(), client_config(&f.ca, None)).unwrap();

        // A broken key file: the reload fails, naming the file, and the config stays.
        write(&f.path("server.key"), "not a key");
        let err = holder.reload().unwrap_err();
        assert!(err.to_string().contains("server.key"), "{err}");
        assert!(Arc::ptr_eq(&second, &holder.current()));
        handshake(holder.current(), client_config(&f.ca, None)).unwrap();
    }
}

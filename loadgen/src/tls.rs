//! TLS client settings: a `rustls::ClientConfig` from `--cafile`, `--cert`/`--key` (mutual
//! TLS) and `--insecure`, on the `ring` provider.
//!
//! Without `--cafile` the system bundle (`/etc/ssl/certs/ca-certificates.crt` and the
//! like) is used when present. `--insecure` still checks the handshake signatures but
//! accepts any server certificate: for self-signed test brokers only.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// CA bundles tried, in order, when no `--cafile` is given.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// What the TLS flags asked for.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of trusted CA certificates.
    pub cafile: Option<PathBuf>,
    /// PEM client certificate chain (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM client private key (mutual TLS).
    pub key: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure: bool,
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file without what we need.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: &'static str,
    },
    /// `--cert` without `--key` or the other way round.
    #[error("--cert and --key go together (mutual TLS needs both)")]
    CertWithoutKey,
    /// No CA to verify the broker with.
    #[error("no CA certificates: give --cafile (or --insecure for a test broker)")]
    NoRoots,
    /// The host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client configuration.
///
/// # Errors
/// Unreadable or empty PEM files, `--cert` without `--key`, or no CA to trust.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        let cafile = match &opts.cafile {
            Some(p) => Some(p.clone()),
            None => SYSTEM_BUNDLES.iter().map(PathBuf::from).find(|p| p.exists()),
        };
        let Some(cafile) = cafile else { return Err(TlsError::NoRoots) };
        let (added, _ignored) = roots.add_parsable_certificates(read_certs(&cafile)?);
        if added == 0 {
            return Err(TlsError::Pem { path: cafile, what: "no usable CA certificate" });
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::CertWithoutKey),
    };
    Ok(Arc::new(config))
}

/// The name the broker's certificate must carry: a DNS name or an IP address.
///
/// # Errors
/// [`TlsError::ServerName`] for a host that is neither.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// A hint for the TLS failures a wrong flag causes, starting with a space (or empty).
pub fn hint(e: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription, CertificateError};
    match e {
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) => " (does the broker require a client certificate? give --cert and --key)",
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown,
        ) => " (the broker refused the client certificate)",
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            " (is --cafile the CA that signed the broker's certificate? --insecure skips the check)"
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => {
            " (the broker's certificate is not for this host name; connect by the name it has)"
        }
        _ => "",
    }
}

fn open(path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), what: "no PEM certificate" });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?
        .ok_or_else(|| TlsError::Pem { path: path.to_path_buf(), what: "no PEM private key" })
}

/// `--insecure`: any certificate is accepted, signatures are still checked.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

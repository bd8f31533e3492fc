//! Mosquitto-compatible password files.
//!
//! One entry a line, `username:hash`, where the hash is what `mosquitto_passwd` writes:
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512, salt and hash in standard
//!   base64 with padding (Mosquitto 2 writes 101 iterations, a 12-byte salt and a 64-byte
//!   hash);
//! - `$6$<salt>$<hash>`: the older form (Mosquitto 1.6 and earlier), SHA-512 of the
//!   password followed by the salt.
//!
//! Blank lines and lines starting with `#` are skipped. Passwords are never kept, logged
//! or put in an error: only hashes are. [`PasswordFile`] is the loaded, checkable form;
//! [`PasswordFileEditor`] keeps a file's lines in order for the `shoal passwd` command.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::rand::SecureRandom as _;

/// Iterations `mosquitto_passwd` uses for new `$7$` entries, and so do we.
pub const DEFAULT_ITERATIONS: u32 = 101;

/// Salt length of new `$7$` entries, as Mosquitto.
pub const SALT_BYTES: usize = 12;

/// Length of the PBKDF2 output written for new entries (the SHA-512 block).
pub const HASH_BYTES: usize = 64;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A password file that could not be loaded, or a line that is not a valid entry.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// The file could not be read or written.
    #[error("cannot access password file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `username:hash` with a hash we understand.
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never contains the hash or a password).
        reason: EntryError,
    },
    /// The same username appears twice.
    #[error("{}:{line}: user {user:?} already has an entry", path.display())]
    DuplicateUser {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the second entry.
        line: usize,
        /// The username.
        user: String,
    },
}

/// Why one `username:hash` entry is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// No `:` between username and hash.
    #[error("expected username:hash")]
    NoSeparator,
    /// An empty username.
    #[error("empty username")]
    EmptyUser,
    /// A hash that is neither `$6$` nor `$7$` (perhaps a clear-text password: hash the
    /// file with `shoal passwd` or `mosquitto_passwd -U`).
    #[error("unsupported password hash (expected $6$ or $7$)")]
    UnknownScheme,
    /// A `$6$`/`$7$` hash with the wrong number of fields or bad base64.
    #[error("malformed password hash")]
    Malformed,
    /// A `$7$` iteration count that is zero or not a number.
    #[error("invalid iteration count")]
    BadIterations,
}

/// A password hash in one of the two Mosquitto forms.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// Iteration count.
        iterations: NonZeroU32,
        /// Salt bytes.
        salt: Vec<u8>,
        /// Derived key (its length is the PBKDF2 output length).
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// The digest.
        hash: Vec<u8>,
    },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes are not passwords, but there is no reason to spread them through logs.
        match self {
            Self::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "PasswordHash::Pbkdf2Sha512 {{ iterations: {iterations}, .. }}")
            }
            Self::Sha512 { .. } => f.write_str("PasswordHash::Sha512 { .. }"),
        }
    }
}

impl PasswordHash {
    /// Hashes `password` the way `mosquitto_passwd` does today: `$7$`, 101 iterations,
    /// a fresh random 12-byte salt.
    ///
    /// # Errors
    /// If the operating system's random source fails.
    pub fn new_pbkdf2(password: &[u8]) -> Result<Self, ring::error::Unspecified> {
        let mut salt = vec![0u8; SALT_BYTES];
        ring::rand::SystemRandom::new().fill(&mut salt)?;
        let iterations = NonZeroU32::new(DEFAULT_ITERATIONS).unwrap_or(NonZeroU32::MIN);
        Ok(Self::pbkdf2_with_salt(password, iterations, salt))
    }

    fn pbkdf2_with_salt(password: &[u8], iterations: NonZeroU32, salt: Vec<u8>) -> Self {
        let mut hash = vec![0u8; HASH_BYTES];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA512,
            iterations,
            &salt,
            password,
            &mut hash,
        );
        Self::Pbkdf2Sha512 { iterations, salt, hash }
    }

    /// Parses the part of a line after `username:`.
    ///
    /// # Errors
    /// An [`EntryError`] saying what is wrong.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        let mut fields = s.split('$');
        if fields.next() != Some("") {
            return Err(EntryError::UnknownScheme);
        }
        let b64 = |f: Option<&str>| -> Result<Vec<u8>, EntryError> {
            let f = f.filter(|f| !f.is_empty()).ok_or(EntryError::Malformed)?;
            B64.decode(f).map_err(|_| EntryError::Malformed)
        };
        let parsed = match fields.next() {
            Some("7") => {
                let iterations = fields
                    .next()
                    .and_then(|i| i.parse::<u32>().ok())
                    .and_then(NonZeroU32::new)
                    .ok_or(EntryError::BadIterations)?;
                let salt = b64(fields.next())?;
                let hash = b64(fields.next())?;
                Self::Pbkdf2Sha512 { iterations, salt, hash }
            }
            Some("6") => {
                let salt = b64(fields.next())?;
                let hash = b64(fields.next())?;
                if hash.len() != ring::digest::SHA512_OUTPUT_LEN {
                    return Err(EntryError::Malformed);
                }
                Self::Sha512 { salt, hash }
            }
            _ => return Err(EntryError::UnknownScheme),
        };
        if fields.next().is_some() {
            return Err(EntryError::Malformed);
        }
        Ok(parsed)
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Pbkdf2Sha512 { iterations, salt, hash } => {
                if hash.is_empty() {
                    return false;
                }
                // ring compares the derived key in constant time.
                ring::pbkdf2::verify(
                    ring::pbkdf2::PBKDF2_HMAC_SHA512,
                    *iterations,
                    salt,
                    password,
                    hash,
                )
                .is_ok()
            }
            Self::Sha512 { salt, hash } => {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                constant_time_eq(ctx.finish().as_ref(), hash)
            }
        }
    }
}

impl fmt::Display for PasswordHash {
    /// The Mosquitto text form, as written after `username:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pbkdf2Sha512 { iterations, salt, hash } => {
                write!(f, "$7${iterations}${}${}", B64.encode(salt), B64.encode(hash))
            }
            Self::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
        }
    }
}

/// Equality whose time depends only on the lengths (which are not secret here).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Splits one line into username and hash; `Ok(None)` for blank and comment lines.
fn parse_line(line: &str) -> Result<Option<(&str, PasswordHash)>, EntryError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (user, hash) = line.split_once(':').ok_or(EntryError::NoSeparator)?;
    if user.is_empty() {
        return Err(EntryError::EmptyUser);
    }
    Ok(Some((user, PasswordHash::parse(hash.trim_end())?)))
}

/// A loaded password file: username → hash.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
    /// Verified against when the user is unknown, so that "no such user" takes as long as
    /// "wrong password" and does not reveal which usernames exist.
    decoy: Option<PasswordHash>,
}

impl PasswordFile {
    /// Reads and parses a password file.
    ///
    /// # Errors
    /// [`PasswdError`] naming the file and, for a bad entry, the line.
    pub fn load(path: &Path) -> Result<Self, PasswdError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PasswdError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a password file; `path` is only used in errors.
    ///
    /// # Errors
    /// As [`PasswordFile::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, PasswdError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let entry = parse_line(line).map_err(|reason| PasswdError::Line {
                path: path.to_owned(),
                line: line_no,
                reason,
            })?;
            let Some((user, hash)) = entry else { continue };
            if users.insert(user.to_owned(), hash).is_some() {
                return Err(PasswdError::DuplicateUser {
                    path: path.to_owned(),
                    line: line_no,
                    user: user.to_owned(),
                });
            }
        }
        let iterations = NonZeroU32::new(DEFAULT_ITERATIONS).unwrap_or(NonZeroU32::MIN);
        let decoy = Some(PasswordHash::pbkdf2_with_salt(b"", iterations, vec![0; SALT_BYTES]));
        Ok(Self { users, decoy })
    }

    /// Whether `user` exists and `password` is theirs.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                if let Some(decoy) = &self.decoy {
                    let _ = std::hint::black_box(decoy.verify(password));
                }
                false
            }
        }
    }

    /// Whether the file has an entry for `user`.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A password file being edited by `shoal passwd`: keeps every line (comments too) in
/// order and rewrites only the entry that changed.
#[derive(Debug, Clone, Default)]
pub struct PasswordFileEditor {
    lines: Vec<String>,
}

impl PasswordFileEditor {
    /// An empty file (`-c`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads an existing file, checking every entry.
    ///
    /// # Errors
    /// As [`PasswordFile::load`].
    pub fn load(path: &Path) -> Result<Self, PasswdError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PasswdError::Io { path: path.to_owned(), source })?;
        PasswordFile::parse(&text, path)?;
        Ok(Self { lines: text.lines().map(str::to_owned).collect() })
    }

    fn position(&self, user: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| !l.starts_with('#') && l.split_once(':').is_some_and(|(u, _)| u == user))
    }

    /// Adds `user` or replaces their hash.
    pub fn set(&mut self, user: &str, hash: &PasswordHash) {
        let line = format!("{user}:{hash}");
        match self.position(user) {
            Some(i) => {
                if let Some(l) = self.lines.get_mut(i) {
                    *l = line;
                }
            }
            None => self.lines.push(line),
        }
    }

    /// Removes `user`; false if there was no such user.
    pub fn remove(&mut self, user: &str) -> bool {
        match self.position(user) {
            Some(i) => {
                self.lines.remove(i);
                true
            }
            None => false,
        }
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// Writes the file: to a temporary file beside it, then renamed over it, so a crash
    /// never leaves half a file. A new file is created readable by its owner only.
    ///
    /// # Errors
    /// [`PasswdError::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<(), PasswdError> {
        use std::io::Write as _;
        let io = |source| PasswdError::Io { path: path.to_owned(), source };
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        if let Ok(meta) = std::fs::metadata(path) {
            // Keep the permissions an administrator gave the existing file.
            file.set_permissions(meta.permissions()).map_err(io)?;
        }
        file.write_all(self.to_text().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// One run of `shoal passwd`, mirroring `mosquitto_passwd`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswdCommand {
    /// The password file.
    pub file: PathBuf,
    /// The user to add, update or delete.
    pub user: String,
    /// Start a new file, replacing any existing one (`-c`).
    pub create: bool,
    /// Delete the user instead of setting a password (`-D`).
    pub delete: bool,
    /// The new password; required unless deleting. Never logged.
    pub password: Option<String>,
}

impl fmt::Debug for PasswdCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswdCommand")
            .field("file", &self.file)
            .field("user", &self.user)
            .field("create", &self.create)
            .field("delete", &self.delete)
            .finish_non_exhaustive()
    }
}

/// Why `shoal passwd` failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswdCommandError {
    /// The file could not be read, parsed or written.
    #[error(transparent)]
    File(#[from] PasswdError),
    /// `-D` for a user the file does not have.
    #[error("user {user:?} not found in {}", path.display())]
    UnknownUser {
        /// The file.
        path: PathBuf,
        /// The username.
        user: String,
    },
    /// The username is empty, starts with `#` or holds `:` or a line break.
    #[error("invalid username {0:?}: it must be non-empty, not start with '#' and not contain ':' or line breaks")]
    InvalidUsername(String),
    /// `-c` together with `-D`.
    #[error("-c and -D cannot be used together")]
    CreateAndDelete,
    /// No password given for an add or update.
    #[error("no password given")]
    MissingPassword,
    /// The random source failed while making a salt.
    #[error("cannot get random bytes for a salt")]
    Random,
}

impl PasswdCommand {
    /// Applies the change to the file.
    ///
    /// # Errors
    /// [`PasswdCommandError`]; the file is left as it was.
    pub fn run(&self) -> Result<(), PasswdCommandError> {
        if self.create && self.delete {
            return Err(PasswdCommandError::CreateAndDelete);
        }
        if !is_valid_username(&self.user) {
            return Err(PasswdCommandError::InvalidUsername(self.user.clone()));
        }
        let mut editor = if self.create {
            PasswordFileEditor::new()
        } else {
            PasswordFileEditor::load(&self.file)?
        };
        if self.delete {
            if !editor.remove(&self.user) {
                return Err(PasswdCommandError::UnknownUser {
                    path: self.file.clone(),
                    user: self.user.clone(),
                });
            }
        } else {
            let password = self.password.as_deref().ok_or(PasswdCommandError::MissingPassword)?;
            let hash = PasswordHash::new_pbkdf2(password.as_bytes())
                .map_err(|_| PasswdCommandError::Random)?;
            editor.set(&self.user, &hash);
        }
        editor.save(&self.file)?;
        Ok(())
    }
}

/// Whether a username can be written to a password file.
pub fn is_valid_username(user: &str) -> bool {
    !user.is_empty() && !user.contains([':', '\n', '\r']) && !user.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Debian's `mosquitto_passwd` 2.0.11 (`-b pw alice secret`).
    const MOSQUITTO_V7: &str = "alice:$7$101$MW0KobDcbp+rS+Su$cwlPc8Fxn2EpNzA64gKLNFDC9rmUc0wWcFsx\
        YokgeLi4K1bM5ZvxVi97bfnzY2esPdpZVpbHXKU/rgBgB+Unew==";

    fn path() -> &'static Path {
        Path::new("/etc/shoal/passwd")
    }

    /// A `$6$` entry computed here: base64(salt) and base64(SHA-512(password ‖ salt)).
    fn v6_entry(user: &str, password: &str, salt: &[u8]) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
        ctx.update(password.as_bytes());
        ctx.update(salt);
        format!("{user}:$6${}${}", B64.encode(salt), B64.encode(ctx.finish()))
    }

    #[test]
    fn verifies_an_entry_written_by_mosquitto_passwd() {
        let file = PasswordFile::parse(MOSQUITTO_V7, path()).unwrap();
        assert!(file.verify("alice", b"secret"));
        assert!(!file.verify("alice", b"Secret"));
        assert!(!file.verify("alice", b""));
        assert!(!file.verify("bob", b"secret"));
    }

    #[test]
    fn verifies_the_older_sha512_form() {
        let text = v6_entry("carol", "hunter2", b"0123456789ab");
        let file = PasswordFile::parse(&text, path()).unwrap();
        assert!(file.verify("carol", b"hunter2"));
        assert!(!file.verify("carol", b"hunter3"));
    }

    #[test]
    fn new_entries_have_mosquittos_layout_and_round_trip() {
        let hash = PasswordHash::new_pbkdf2(b"pa:ss$word").unwrap();
        let text = hash.to_string();
        let fields: Vec<&str> = text.split('$').collect();
        assert_eq!(fields[..3], ["", "7", "101"]);
        assert_eq!(B64.decode(fields[3]).unwrap().len(), SALT_BYTES);
        assert_eq!(B64.decode(fields[4]).unwrap().len(), HASH_BYTES);
        let parsed = PasswordHash::parse(&text).unwrap();
        assert_eq!(parsed, hash);
        assert!(parsed.verify(b"pa:ss$word"));
        assert!(!parsed.verify(b"pa:ss$wore"));
        let again = PasswordHash::new_pbkdf2(b"pa:ss$word").unwrap();
        assert_ne!(again, hash, "every entry gets its own salt");
    }

    #[test]
    fn blank_and_comment_lines_are_skipped() {
        let text = format!("# users\n\n{MOSQUITTO_V7}\r\n   \n");
        let file = PasswordFile::parse(&text, path()).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("alice", b"secret"));
    }

    #[test]
    fn bad_lines_are_reported_with_file_and_line_and_no_secret() {
        let cases = [
            ("alice", EntryError::NoSeparator),
            (":$7$101$YQ==$YQ==", EntryError::EmptyUser),
            ("alice:secret", EntryError::UnknownScheme),
            ("alice:$5$abc$def", EntryError::UnknownScheme),
            ("alice:$7$0$YQ==$YQ==", EntryError::BadIterations),
            ("alice:$7$many$YQ==$YQ==", EntryError::BadIterations),
            ("alice:$7$101$YQ==", EntryError::Malformed),
            ("alice:$7$101$!!$YQ==", EntryError::Malformed),
            ("alice:$7$101$YQ==$YQ==$x", EntryError::Malformed),
            ("alice:$6$YQ==$YQ==", EntryError::Malformed),
        ];
        for (line, want) in cases {
            let text = format!("# header\n{line}\n");
            let err = PasswordFile::parse(&text, path()).unwrap_err();
            match &err {
                PasswdError::Line { line: 2, reason, .. } => assert_eq!(*reason, want, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.starts_with("/etc/shoal/passwd:2: "), "{msg}");
            assert!(!msg.contains("secret"), "{msg}");
        }
    }

    #[test]
    fn duplicate_users_are_an_error() {
        let text = format!("{MOSQUITTO_V7}\n{MOSQUITTO_V7}\n");
        let err = PasswordFile::parse(&text, path()).unwrap_err();
        assert!(matches!(err, PasswdError::DuplicateUser { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn missing_file_error_names_it() {
        let err = PasswordFile::load(Path::new("/nonexistent/shoal-pw")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/shoal-pw"));
    }

    #[test]
    fn debug_output_shows_no_hash_bytes() {
        let hash = PasswordHash::parse(MOSQUITTO_V7.split_once(':').unwrap().1).unwrap();
        let dbg = format!("{hash:?}");
        assert!(!dbg.contains("MW0K") && !dbg.contains("cwlP"), "{dbg}");
    }

    #[test]
    fn editor_adds_updates_and_deletes_keeping_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, format!("# keep me\n{MOSQUITTO_V7}\n")).unwrap();
        let mut ed = PasswordFileEditor::load(&file).unwrap();
        ed.set("bob", &PasswordHash::new_pbkdf2(b"b0b").unwrap());
        ed.set("alice", &PasswordHash::new_pbkdf2(b"new").unwrap());
        ed.save(&file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("# keep me\nalice:$7$101$"), "{text}");
        let pw = PasswordFile::load(&file).unwrap();
        assert!(pw.verify("alice", b"new") && !pw.verify("alice", b"secret"));
        assert!(pw.verify("bob", b"b0b"));

        let mut ed = PasswordFileEditor::load(&file).unwrap();
        assert!(ed.remove("alice"));
        assert!(!ed.remove("alice"));
        ed.save(&file).unwrap();
        let pw = PasswordFile::load(&file).unwrap();
        assert!(!pw.contains("alice") && pw.contains("bob"));
        assert!(!dir.path().join("pw.tmp").exists());
    }

    #[cfg(unix)]
    #[test]
    fn new_files_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        let mut ed = PasswordFileEditor::new();
        ed.set("u", &PasswordHash::new_pbkdf2(b"p").unwrap());
        ed.save(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn command_creates_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        let cmd = |user: &str, create: bool, delete: bool, password: Option<&str>| PasswdCommand {
            file: file.clone(),
            user: user.into(),
            create,
            delete,
            password: password.map(str::to_owned),
        };
        cmd("alice", true, false, Some("one")).run().unwrap();
        cmd("bob", false, false, Some("two")).run().unwrap();
        cmd("alice", false, false, Some("three")).run().unwrap();
        let pw = PasswordFile::load(&file).unwrap();
        assert!(pw.verify("alice", b"three") && pw.verify("bob", b"two"));
        cmd("bob", false, true, None).run().unwrap();
        assert!(!PasswordFile::load(&file).unwrap().contains("bob"));
        assert!(matches!(
            cmd("bob", false, true, None).run(),
            Err(PasswdCommandError::UnknownUser { .. })
        ));
        assert!(matches!(
            cmd("x", true, true, None).run(),
            Err(PasswdCommandError::CreateAndDelete)
        ));
        assert!(matches!(
            cmd("a:b", false, false, Some("p")).run(),
            Err(PasswdCommandError::InvalidUsername(_))
        ));
        assert!(matches!(
            cmd("carol", false, false, None).run(),
            Err(PasswdCommandError::MissingPassword)
        ));
        // -c replaces the file.
        cmd("dave", true, false, Some("four")).run().unwrap();
        let pw = PasswordFile::load(&file).unwrap();
        assert_eq!(pw.len(), 1);
        assert!(!format!("{:?}", cmd("u", false, false, Some("hidden"))).contains("hidden"));
    }

    #[test]
    fn command_on_a_missing_file_without_create_names_it() {
        let cmd = PasswdCommand {
            file: PathBuf::from("/nonexistent/dir/pw"),
            user: "u".into(),
            create: false,
            delete: false,
            password: Some("p".into()),
        };
        let err = cmd.run().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/pw"), "{err}");
    }

    #[test]
    fn usernames_that_would_break_the_file_are_invalid() {
        assert!(is_valid_username("alice"));
        assert!(is_valid_username("with space"));
        for bad in ["", "a:b", "a\nb", "#root"] {
            assert!(!is_valid_username(bad), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(s in "\\PC{0,80}") {
            let _ = PasswordFile::parse(&s, path());
            let _ = PasswordHash::parse(&s);
        }
    }
}

//! Secrets from the environment, failing closed.
//!
//! A secret variable (`WEBHOOK_SECRET`, `ANALYTICS_API_KEY`) that is unset turns its check
//! off, and the service says so loudly at start. One that is set must hold real secrets: an
//! empty value, a value shorter than [`MIN_SECRET_BYTES`] or a `change-me` placeholder
//! stops the program at start, because each would otherwise turn into a check anyone
//! passes (an HMAC keyed with the empty string, a bearer key matched by no header at all).
//!
//! A variable holds a comma-separated list, so that a key can be rotated without downtime
//! (add the new one, move the clients, remove the old one). Each secret may come from a file
//! instead, `<NAME>_FILE=/run/secrets/x`, the container-secret convention; setting both is
//! an error.
//!
//! Secrets never reach a log line or an error message: they are named by a [`KeyId`], and
//! their `Debug` shows only that.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read as _;

/// Fewest bytes of a plain secret: 256 bits, the HMAC-SHA256 key size.
pub const MIN_SECRET_BYTES: usize = 32;

/// Fewest bytes of a `whsec_` key once decoded: Standard Webhooks asks for at least 24
/// (192 bits), and its own published test key is exactly that long.
pub const MIN_WHSEC_BYTES: usize = 24;

/// The prefix of a Standard Webhooks secret, whose key is the base64 that follows.
pub const WHSEC_PREFIX: &str = "whsec_";

/// Most bytes read from a `_FILE`: a secret is short, and a mistaken path to a large or
/// endless file (`/dev/zero`) must not hang the start.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A name for a key that is safe to log and to use as a metric label: the first 8 hex
/// digits of the SHA-256 of the key. 32 bits tell keys apart without helping anyone guess
/// a key of 256 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 4]);

impl KeyId {
    pub fn of(key: &[u8]) -> KeyId {
        let digest = Sha256::digest(key);
        KeyId([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// One secret key: its bytes and its [`KeyId`]. `Debug` shows only the id.
#[derive(Clone)]
pub struct Key {
    bytes: Vec<u8>,
    id: KeyId,
}

impl Key {
    pub fn new(bytes: Vec<u8>) -> Key {
        let id = KeyId::of(&bytes);
        Key { bytes, id }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// The keys of one variable, in the order written (at least one). `Debug` shows only ids.
#[derive(Clone)]
pub struct Keys(Vec<Key>);

impl Keys {
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key ids, comma-separated, for the start-up log line.
    pub fn ids(&self) -> String {
        self.0
            .iter()
            .map(|k| k.id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys[{}]", self.ids())
    }
}

/// Which secret of a list a problem is about, for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// 1-based position in the list.
    pub position: usize,
    /// How many secrets the list holds.
    pub of: usize,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.of == 1 {
            f.write_str("the secret")
        } else {
            write!(f, "secret {} of {}", self.position, self.of)
        }
    }
}

/// Why a secret variable was refused. The messages name the problem, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("it is set but empty; unset it to turn the check off")]
    Empty,
    #[error("{0} is empty (a stray comma?)")]
    EmptyEntry(Entry),
    #[error("{0} is shorter than {MIN_SECRET_BYTES} bytes")]
    TooShort(Entry),
    #[error("{0} decodes to fewer than {MIN_WHSEC_BYTES} bytes, the Standard Webhooks minimum")]
    WhsecTooShort(Entry),
    #[error("{0} is a placeholder (it contains \"change-me\"): set a real secret")]
    Placeholder(Entry),
    #[error("{entry} starts with whsec_ but the rest is not base64: {source}")]
    NotBase64 {
        entry: Entry,
        #[source]
        source: base64::DecodeError,
    },
    #[error("cannot be read: {0}")]
    File(#[source] std::io::Error),
    #[error("is larger than {MAX_FILE_BYTES} bytes: not a secret file")]
    FileTooLarge,
}

/// Plain secrets only (bearer keys): the value parser of `ANALYTICS_API_KEY`.
pub fn keys(value: &str) -> Result<Keys, SecretError> {
    list(value, plain)
}

/// [`keys`] read from the file named by `<NAME>_FILE`.
pub fn keys_from_file(path: &str) -> Result<Keys, SecretError> {
    keys(&read_file(path)?)
}

/// Plain secrets or Standard Webhooks `whsec_<base64>` ones (HMAC keys): the value parser
/// of `WEBHOOK_SECRET`.
pub fn signing_keys(value: &str) -> Result<Keys, SecretError> {
    list(value, |text, entry| match text.strip_prefix(WHSEC_PREFIX) {
        Some(encoded) => whsec(encoded, entry),
        None => plain(text, entry),
    })
}

/// [`signing_keys`] read from the file named by `<NAME>_FILE`.
pub fn signing_keys_from_file(path: &str) -> Result<Keys, SecretError> {
    signing_keys(&read_file(path)?)
}

/// Splits a comma-separated list (spaces around each secret ignored) and checks each.
fn list(
    value: &str,
    parse: impl Fn(&str, Entry) -> Result<Key, SecretError>,
) -> Result<Keys, SecretError> {
    if value.trim().is_empty() {
        return Err(SecretError::Empty);
    }
    let texts: Vec<&str> = value.split(',').map(str::trim).collect();
    let of = texts.len();
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let entry = Entry {
                position: i + 1,
                of,
            };
            if text.is_empty() {
                return Err(SecretError::EmptyEntry(entry));
            }
            if is_placeholder(text) {
                return Err(SecretError::Placeholder(entry));
            }
            parse(text, entry)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Keys)
}

/// A plain secret: its UTF-8 bytes are the key.
fn plain(text: &str, entry: Entry) -> Result<Key, SecretError> {
    if text.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort(entry));
    }
    Ok(Key::new(text.as_bytes().to_vec()))
}

/// A Standard Webhooks secret: the key is the decoded base64, as that specification says
/// (its libraries sign with the decoded bytes, so using the text would never match).
fn whsec(encoded: &str, entry: Entry) -> Result<Key, SecretError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|source| SecretError::NotBase64 { entry, source })?;
    // Measured once decoded: 32 base64 characters are only 24 bytes.
    if bytes.len() < MIN_WHSEC_BYTES {
        return Err(SecretError::WhsecTooShort(entry));
    }
    Ok(Key::new(bytes))
}

/// `change-me` (and `changeme`), in any case: the placeholders of `deploy/*.env`.
fn is_placeholder(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("change-me") || lower.contains("changeme")
}

/// The content of a secret file, without its trailing newline (editors and `echo` add
/// one, and it is not part of the secret).
fn read_file(path: &str) -> Result<String, SecretError> {
    let file = std::fs::File::open(path).map_err(SecretError::File)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(SecretError::File)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(SecretError::FileTooLarge);
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    fn refused(result: Result<Keys, SecretError>) -> String {
        match result {
            Ok(keys) => panic!("accepted {keys:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_short_and_placeholder_secrets_are_refused() {
        assert!(refused(keys("")).contains("empty"));
        assert!(refused(keys("  ")).contains("empty"));
        assert!(refused(keys("short")).contains("shorter than 32 bytes"));
        let placeholder = "change-me-production-analytics-key-of-some-length";
        assert!(refused(keys(placeholder)).contains("placeholder"));
        assert!(refused(keys(&format!("{GOOD}-CHANGEME"))).contains("placeholder"));
    }

    #[test]
    fn every_secret_of_a_list_is_checked_and_named_by_position() {
        let two = keys(&format!("{GOOD}, {GOOD}x")).map(|k| k.len());
        assert_eq!(two.ok(), Some(2));
        assert_eq!(
            refused(keys(&format!("{GOOD},short"))),
            "secret 2 of 2 is shorter than 32 bytes"
        );
        assert_eq!(
            refused(keys(&format!("{GOOD},"))),
            "secret 2 of 2 is empty (a stray comma?)"
        );
    }

    #[test]
    fn an_error_never_contains_the_secret() {
        for value in ["short-secret", "change-me-1234567890123456789012345"] {
            let message = refused(keys(value));
            assert!(!message.contains(value), "{message}");
        }
    }

    #[test]
    fn a_whsec_key_is_its_decoded_bytes_and_needs_24_of_them() {
        let keys = signing_keys("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").ok();
        let key = keys.as_ref().and_then(|k| k.iter().next());
        assert_eq!(key.map(|k| k.bytes().len()), Some(24));
        // 16 bytes, though 30 characters long with the prefix.
        assert!(refused(signing_keys("whsec_AAAAAAAAAAAAAAAAAAAAAA==")).contains("24 bytes"));
        assert!(
            refused(signing_keys("whsec_not*base64*at*all*but*long*enough")).contains("base64")
        );
        // A bearer key takes no whsec_ meaning: it is a plain (here long enough) secret.
        let plain = super::keys("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").ok();
        let plain_key = plain.as_ref().and_then(|k| k.iter().next());
        assert_eq!(plain_key.map(|k| k.bytes().len()), Some(38));
    }

    #[test]
    fn a_key_id_is_8_hex_digits_of_its_sha256_and_debug_shows_nothing_else() {
        // SHA-256("abc") starts ba7816bf.
        assert_eq!(KeyId::of(b"abc").to_string(), "ba7816bf");
        let keys = signing_keys(GOOD).ok();
        let debug = format!("{keys:?}");
        assert!(!debug.contains(GOOD), "{debug}");
        assert!(
            debug.contains(&KeyId::of(GOOD.as_bytes()).to_string()),
            "{debug}"
        );
    }

    #[test]
    fn a_secret_file_loses_its_trailing_newline() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("key");
        std::fs::write(&path, format!("{GOOD}\r\n"))?;
        let path = path.to_string_lossy().into_owned();
        let ids = keys_from_file(&path).map(|k| k.ids()).ok();
        assert_eq!(ids, Some(KeyId::of(GOOD.as_bytes()).to_string()));
        std::fs::write(&path, "\n")?;
        assert!(refused(keys_from_file(&path)).contains("empty"));
        assert!(refused(keys_from_file("/nonexistent/secret")).contains("cannot be read"));
        std::fs::remove_dir_all(&dir)
    }
}

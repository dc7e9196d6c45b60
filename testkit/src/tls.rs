//! Self-signed server certificates for TLS tests, made by the `openssl` command.

use std::path::PathBuf;
use std::process::Command;

/// A self-signed certificate for `localhost` and 127.0.0.1 and its key (PEM files in a
/// temporary directory, removed on drop). It is its own root: trusting it means naming
/// its certificate as the root (`sslrootcert`).
#[derive(Debug)]
pub struct SelfSigned {
    dir: tempfile::TempDir,
}

impl SelfSigned {
    /// A new key pair and certificate, valid for two days. Not a CA (`CA:FALSE`): rustls,
    /// like browsers, refuses a CA certificate as a server's own.
    pub fn generate() -> anyhow::Result<SelfSigned> {
        let dir = tempfile::Builder::new().prefix("testkit-tls").tempdir()?;
        let output = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(dir.path().join("server.key"))
            .arg("-out")
            .arg(dir.path().join("server.crt"))
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run openssl (is it installed?): {e}"))?;
        anyhow::ensure!(
            output.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(SelfSigned { dir })
    }

    /// The certificate (also the root to trust).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

//! Files a test needs for a moment: token secrets, and a CA with a
//! certificate for the TLS tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A directory of its own under the system's temporary directory, removed
/// with what it holds when this is dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ws-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A file that holds `content`, in a [`TempDir`] of its own: a token secret
/// for chat_server's `--auth-secret-file` and make_token's `--secret-file`,
/// or a systemd unit to verify.
pub struct TempFile {
    _dir: TempDir,
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(content: &str) -> TempFile {
        TempFile::named("secret", content)
    }

    /// A file called `name` (systemd wants a unit's file to end in `.service`).
    pub fn named(name: &str, content: &str) -> TempFile {
        let dir = TempDir::new();
        let path = dir.path.join(name);
        std::fs::write(&path, content).expect("write the temporary file");
        TempFile { _dir: dir, path }
    }

    /// The path, as a command-line argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temporary path")
    }
}

/// A CA made for this test run, and a server certificate it signed.
pub struct Certificates {
    /// The CA's certificate, PEM: what a client trusts.
    pub ca: TempFile,
    /// The server's certificate (PEM), for 127.0.0.1 and localhost.
    pub cert: TempFile,
    /// Its private key, PEM.
    pub key: TempFile,
}

impl Certificates {
    pub fn new() -> Certificates {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "websocket-tutorial test CA");
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA");
        // rcgen makes "127.0.0.1" an IP address entry, which is what a
        // client connecting to wss://127.0.0.1:PORT checks.
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(names).expect("server parameters");
        let cert = params.signed_by(&key, &ca).expect("a server certificate");
        Certificates {
            ca: TempFile::new(&ca.pem()),
            cert: TempFile::new(&cert.pem()),
            key: TempFile::new(&key.serialize_pem()),
        }
    }

    /// The server's flags.
    pub fn args(&self) -> [&str; 4] {
        ["--tls-cert", self.cert.arg(), "--tls-key", self.key.arg()]
    }

    /// A TLS connector that trusts only this run's CA.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&self.ca.path).expect("the CA")).expect("a root");
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// The SHA-256 of the server certificate's public key, as its DER
    /// SubjectPublicKeyInfo: what a key pin names, and what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes (in base64).
    pub fn server_spki_sha256(&self) -> Vec<u8> {
        use rcgen::{KeyPair, PublicKeyData};
        let pem = std::fs::read_to_string(&self.key.path).expect("read the server key");
        let key = KeyPair::from_pem(&pem).expect("the server key");
        let spki = key.subject_public_key_info();
        ring::digest::digest(&ring::digest::SHA256, &spki).as_ref().to_vec()
    }
}

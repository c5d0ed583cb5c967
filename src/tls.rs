//! Serving `wss://`: TLS with rustls (pure Rust, no OpenSSL), chapter 10.6.
//!
//! A server given `--tls-cert PEM --tls-key PEM` ([`TlsArgs`]) reads both
//! files before it binds ([`TlsArgs::acceptor`]): a server that cannot
//! encrypt should not start. [`crate::server::bind_with`] then prints
//! `listening on wss://IP:PORT`, and [`crate::server::accept`] runs the TLS
//! handshake before the WebSocket one, under the same deadline.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto};
use tokio_util::either::Either;

/// What a server's connection runs on: plain TCP (`ws://`), or TLS over TCP
/// (`wss://`). One type, so a handler reads and writes both the same way.
///
/// The TLS side is boxed: rustls's state is some 1,170 bytes, and an `Either`
/// is as large as its larger side, so without the box every plain
/// connection would carry a TLS state it never uses, wherever its task holds
/// the stream (chapter 8.4 measured 2.6 KiB more per idle connection).
pub type Stream = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

// ANCHOR: args
/// The flags that turn a server's `ws://` into `wss://`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Serve wss://: the certificate chain, PEM, the server's own first.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}
// ANCHOR_END: args

impl TlsArgs {
    /// Reads the certificate and key, `None` without `--tls-cert`. An
    /// unreadable, empty or invalid file, or a key that does not fit the
    /// certificate, is one line that names the file.
    pub fn acceptor(&self) -> Result<Option<TlsAcceptor>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        acceptor(cert, key).map(Some)
    }
}

/// A TLS acceptor for the certificate chain in `cert` and its key in `key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let (cert_shown, key_shown) = (cert.display(), key.display());
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
    };
    let cert_pem = read(cert, "certificate file")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file {cert_shown}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("the certificate file {cert_shown} holds no PEM certificate"));
    }
    let key_pem = read(key, "key file")?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("the key file {key_shown} holds no PEM private key: {e}"))?;
    // ring, chosen explicitly: nothing here depends on which crypto
    // provider another crate may have installed process-wide.
    let config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| format!("the key file {key_shown} does not fit {cert_shown}: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_connection_carries_no_tls_state() {
        // rustls's state is 1,208 bytes. Held inline by the `Either`, it
        // made every stream that large, TLS or not, and the WebSocket on it
        // 1,488 bytes instead of 312 (release build): idle chat members went
        // from 7.3 to 10.1 KiB each (chapter 8.4). Boxed, a plain stream is
        // a `TcpStream` and at most a word more.
        let (stream, tcp) = (size_of::<Stream>(), size_of::<TcpStream>());
        assert!(stream <= tcp + size_of::<usize>(), "tls::Stream is {stream} bytes, TCP {tcp}");
        let ws = size_of::<tokio_tungstenite::WebSocketStream<Stream>>();
        let plain_ws = size_of::<tokio_tungstenite::WebSocketStream<TcpStream>>();
        assert!(ws <= plain_ws + size_of::<usize>(), "WsStream is {ws} bytes, on TCP {plain_ws}");
    }

    #[test]
    fn missing_empty_and_mismatched_files_are_one_line_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key, other_key) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("k2"));
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        std::fs::write(&other_key, other.serialize_pem()).unwrap();
        assert!(acceptor(&cert, &key).is_ok());

        let missing = dir.join("missing.pem");
        let error = acceptor(&missing, &key).err().unwrap();
        assert!(
            error.contains("cannot read the certificate file") && error.contains("missing.pem")
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let error = acceptor(&empty, &key).err().unwrap();
        assert!(error.contains("empty.pem") && error.contains("no PEM certificate"), "{error}");
        let error = acceptor(&cert, &empty).err().unwrap();
        assert!(error.contains("empty.pem") && error.contains("no PEM private key"), "{error}");
        let error = acceptor(&cert, &other_key).err().unwrap();
        assert!(error.contains("does not fit"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

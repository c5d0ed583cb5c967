//! Chapter 10.6: makes the files a `wss://` server and its clients need, for
//! trying TLS on your own machine.
//!
//! What it teaches: what a server's certificate hangs on. A certificate
//! authority (CA) of your own signs a certificate for the names the clients
//! connect to (`127.0.0.1` and `localhost`); the server shows that
//! certificate and proves it holds its key; a client trusts the server
//! because it trusts the CA (`--ca-cert`). A real server gets its
//! certificate from a public CA instead (Let's Encrypt, through Caddy or
//! certbot), which every system already trusts.
//!
//! ```text
//! cargo run --example make_cert -- certs
//! cargo run --example chat_server -- 127.0.0.1:9443 --tls-cert certs/cert.pem --tls-key certs/key.pem
//! cargo run --example chat_client -- wss://127.0.0.1:9443 alice --ca-cert certs/ca.pem
//! ```
//!
//! It writes `ca.pem` (the CA's certificate, for clients), `cert.pem` (the
//! server's certificate) and `key.pem` (the server's private key: keep it to
//! yourself) into the directory given, creating it, and prints their paths.
//! It never overwrites: if one of the files exists, it says so and exits 1.
//! The CA's own key is not written anywhere, so nothing else can be signed
//! with it.
//!
//! Docs: docs/10-security.md

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use websocket_tutorial::output;

/// Makes a CA and a certificate it signs for 127.0.0.1 and localhost, as PEM
/// files for --tls-cert, --tls-key and --ca-cert.
#[derive(Parser)]
struct Args {
    /// Where to write ca.pem, cert.pem and key.pem; created if missing.
    #[arg(default_value = ".")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    let Args { dir } = Args::parse();
    let paths = ["ca.pem", "cert.pem", "key.pem"].map(|name| dir.join(name));
    if let Some(existing) = paths.iter().find(|path| path.exists()) {
        return output::fail(format_args!(
            "{} exists already: not overwriting it",
            existing.display()
        ));
    }
    let (ca, cert, key) = match make() {
        Ok(pems) => pems,
        Err(e) => return output::fail(format_args!("cannot make the certificates: {e}")),
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return output::fail(format_args!("cannot create {}: {e}", dir.display()));
    }
    for (path, pem) in paths.iter().zip([ca, cert, key]) {
        if let Err(e) = write_new(path, &pem) {
            return output::fail(format_args!("cannot write {}: {e}", path.display()));
        }
        let _ = output::line(path.display());
    }
    ExitCode::SUCCESS
}

/// The CA's certificate, the server's certificate and the server's key, PEM.
fn make() -> Result<(String, String, String), rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "websocket-tutorial local CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    // "127.0.0.1" becomes an IP address entry, which is what a client
    // connecting to wss://127.0.0.1:PORT checks; "localhost" a DNS name.
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(names)?.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// Writes `pem` to a file that must not exist yet, readable by its owner
/// only (one of them is a private key).
fn write_new(path: &Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(pem.as_bytes())
}

//! Tokens (chapter 10.5): who a client is, proved by a JSON Web Token that
//! whoever holds the server's secret signed (HS256), naming the user (`sub`)
//! and when the proof runs out (`exp`).
//!
//! chat_server's `--auth-secret-file` loads a [`Secret`] into its
//! [`Admission`](crate::admission::Admission), which then asks every
//! handshake for a token ([`token_in`]) and answers HTTP 401 without a valid
//! one; the `make_token` example signs one with the same file.
//!
//! ```
//! use std::time::Duration;
//! use websocket_tutorial::token::Secret;
//!
//! let secret = Secret::new(b"correct horse battery staple").unwrap();
//! let token = secret.make("alice", Duration::from_secs(60)).unwrap();
//! assert_eq!(secret.verify(&token).unwrap(), "alice");
//! let other = Secret::new(b"another secret").unwrap();
//! assert!(other.verify(&token).is_err());
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::errors::Error as JwtError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::handshake::server::Request;
use tokio_tungstenite::tungstenite::http::header;

/// The server's flag that asks every client for a token.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Require a JSON Web Token (HS256, with sub and exp) signed with this
    /// file's content, surrounding whitespace trimmed (chapter 10.5).
    #[arg(long, value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The secret, with the flag: read at once, so that a server that would
    /// refuse everyone for want of it does not start ([`Secret::from_file`]).
    pub fn secret(&self) -> Result<Option<Secret>, String> {
        self.auth_secret_file.as_deref().map(Secret::from_file).transpose()
    }
}

/// What a token says: who (`sub`), and until when (`exp`, seconds since
/// 1970 UTC).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
}

/// The key that signs and checks tokens. Its `Debug` shows no byte of it,
/// so that a logged `Admission` gives nothing away.
#[derive(Clone)]
pub struct Secret {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

// ANCHOR: secret
impl Secret {
    /// A secret of these bytes; an empty one is refused (anyone could sign
    /// with it).
    pub fn new(bytes: &[u8]) -> Result<Secret, JwtError> {
        Ok(Secret {
            encoding: EncodingKey::from_secret(bytes)?,
            decoding: DecodingKey::from_secret(bytes)?,
        })
    }

    /// The secret in the file at `path`: its content, surrounding whitespace
    /// trimmed (an editor's final newline is not part of it). A file that
    /// cannot be read or holds only whitespace is an error that names it.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let shown = path.display();
        let content =
            std::fs::read(path).map_err(|e| format!("cannot read the secret file {shown}: {e}"))?;
        let secret = content.trim_ascii();
        if secret.is_empty() {
            return Err(format!("the secret file {shown} is empty"));
        }
        Secret::new(secret).map_err(|e| format!("the secret file {shown}: {e}"))
    }

    /// A token for `username` that expires `ttl` from now.
    pub fn make(&self, username: &str, ttl: Duration) -> Result<String, JwtError> {
        let exp = jsonwebtoken::get_current_timestamp().saturating_add(ttl.as_secs());
        let claims = Claims { sub: username.into(), exp };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The username (`sub`) of a token this secret signed with HS256 and
    /// that has not expired; any other token is an error that says why.
    ///
    /// Only HS256 is accepted, whatever the token's header claims: a token
    /// that names another algorithm (`none`, or an RS256 one checked with
    /// our secret as if it were a public key) is refused. `exp` and `sub`
    /// must be there; a minute of leeway allows for clocks a little apart.
    pub fn verify(&self, token: &str) -> Result<String, JwtError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?;
        Ok(data.claims.sub)
    }
}
// ANCHOR_END: secret

/// Parses a client's `--token`: a JSON Web Token is base64url text in
/// three parts separated by dots, so anything else (a space, a quote, a
/// character that cannot go in a header or a URL) is refused before any
/// connection is opened, rather than sent and answered with 401.
pub fn parse_token(text: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.=".contains(c);
    if text.is_empty() || !text.chars().all(allowed) {
        return Err("not a token: base64url text and dots, as make_token prints".into());
    }
    Ok(text.into())
}

// ANCHOR: token_in
/// The token a handshake request carries: `Authorization: Bearer TOKEN`,
/// or else `?token=TOKEN` in its URL (a browser's only way: its WebSocket
/// cannot set headers). `None` when it has neither.
pub fn token_in(request: &Request) -> Option<&str> {
    let bearer = request.headers().get(header::AUTHORIZATION).and_then(|value| {
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    // A token is base64url and dots: nothing in it is percent-encoded.
    let query = || {
        let pairs = request.uri().query()?.split('&');
        pairs.filter_map(|pair| pair.strip_prefix("token=")).next()
    };
    bearer.or_else(query).filter(|token| !token.is_empty())
}
// ANCHOR_END: token_in

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    fn secret() -> Secret {
        Secret::new(b"s3cret").unwrap()
    }

    fn request(url: &str, authorization: Option<&str>) -> Request {
        let mut request = url.into_client_request().unwrap();
        if let Some(value) = authorization {
            request.headers_mut().insert(header::AUTHORIZATION, value.parse().unwrap());
        }
        request
    }

    #[test]
    fn a_token_on_the_command_line_is_base64url_and_dots() {
        assert!(parse_token("eyJh.eyJz.c2ln-_").is_ok());
        for bad in ["", "a b", "Bearer x", "x\n", "é"] {
            assert!(parse_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_token_is_found_in_the_header_or_the_query() {
        let url = "ws://127.0.0.1:9001/";
        assert_eq!(token_in(&request(url, Some("Bearer abc.def"))), Some("abc.def"));
        assert_eq!(token_in(&request(url, Some("bearer abc"))), Some("abc"));
        assert_eq!(token_in(&request(url, Some("Basic abc"))), None);
        assert_eq!(token_in(&request("ws://h/?a=1&token=x.y", None)), Some("x.y"));
        assert_eq!(token_in(&request("ws://h/?token=q", Some("Bearer h"))), Some("h"));
        assert_eq!(token_in(&request("ws://h/?token=", None)), None);
        assert_eq!(token_in(&request(url, None)), None);
    }

    #[test]
    fn only_a_signed_unexpired_hs256_token_with_sub_passes() {
        let token = secret().make("alice", Duration::from_secs(60)).unwrap();
        assert_eq!(secret().verify(&token).unwrap(), "alice");

        let expired =
            Claims { sub: "alice".into(), exp: jsonwebtoken::get_current_timestamp() - 3600 };
        let key = EncodingKey::from_secret(b"s3cret").unwrap();
        let expired = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &expired, &key).unwrap();
        assert!(secret().verify(&expired).is_err(), "expired");

        let claims = Claims { sub: "alice".into(), exp: u64::MAX / 2 };
        let hs384 = jsonwebtoken::encode(&Header::new(Algorithm::HS384), &claims, &key).unwrap();
        assert!(secret().verify(&hs384).is_err(), "another algorithm");

        let no_sub = serde_json::json!({ "exp": u64::MAX / 2 });
        let no_sub = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &no_sub, &key).unwrap();
        assert!(secret().verify(&no_sub).is_err(), "no sub");

        // alg "none": a header and claims with no signature at all.
        let none = format!("eyJhbGciOiJub25lIn0.{}.", token.split('.').nth(1).unwrap());
        assert!(secret().verify(&none).is_err(), "alg none");
        assert!(secret().verify("not a token").is_err());
    }

    #[test]
    fn a_secret_file_is_trimmed_and_an_empty_one_refused() {
        let dir = std::env::temp_dir().join(format!("token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "  s3cret\n").unwrap();
        let token = secret().make("bob", Duration::from_secs(60)).unwrap();
        assert_eq!(Secret::from_file(&file).unwrap().verify(&token).unwrap(), "bob");
        std::fs::write(&file, " \n").unwrap();
        assert!(Secret::from_file(&file).unwrap_err().contains("is empty"));
        let missing = dir.join("missing");
        assert!(Secret::from_file(&missing).unwrap_err().contains("cannot read"));
        let flag =
            |path: Option<&Path>| TokenArgs { auth_secret_file: path.map(Path::to_path_buf) };
        assert!(flag(None).secret().unwrap().is_none(), "no flag, no tokens");
        assert!(flag(Some(&missing)).secret().unwrap_err().contains("cannot read"));
        std::fs::write(&file, "s3cret").unwrap();
        let token = secret().make("bob", Duration::from_secs(60)).unwrap();
        assert_eq!(flag(Some(&file)).secret().unwrap().unwrap().verify(&token).unwrap(), "bob");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

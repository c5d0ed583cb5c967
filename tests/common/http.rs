//! Plain HTTP/1.1 requests, for the servers that answer some: the admin
//! port (chapter 10.7) and axum_chat's page (chapter 12). A `GET ...
//! Connection: close` over a `TcpStream`, read to the end: the servers
//! under test are hyper's, and a test that used hyper's client too would
//! check little more than that hyper agrees with itself.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::WAIT;

/// What a server answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (any case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `GET path` from `addr` (`IP:PORT`) on a connection of its own, with
/// `headers` (`Name: value` each) besides `Host`, and `Connection: close`
/// unless `headers` has a `Connection` of its own (which must then say
/// `close` too: the answer is read to the end of the connection).
pub async fn http_get_with(addr: &str, path: &str, headers: &[&str]) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to the HTTP port");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("connection:")) {
            request.push_str("Connection: close\r\n");
        }
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.expect("send the request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read the answer");
        answer
    };
    let answer = timeout(WAIT, exchange).await.expect("the server answers within WAIT");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no status line in {head:?}"));
    Answer { status, head: head.to_string(), body: body.to_string() }
}

/// `GET path` from `addr`, with no other header than `Host`.
pub async fn http_get(addr: &str, path: &str) -> Answer {
    http_get_with(addr, path, &[]).await
}

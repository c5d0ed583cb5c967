//! Chapter 1.2 with real bytes: the RFC 6455 sample handshake and one frame
//! each way, written and read by hand over a plain TCP socket against the
//! real `echo_server`.
//!
//! Docs: docs/01-websocket-basics.md

mod common;

use common::{Server, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The sample key from RFC 6455 section 1.3: base64 of the 16 bytes
/// `the sample nonce`. A real client picks 16 random bytes per connection.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The accept value RFC 6455 gives for that key.
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The accept value is derived from the key exactly as RFC 6455 says.
#[test]
fn accept_key_for_the_rfc_sample() {
    // ANCHOR: accept_key
    // Sec-WebSocket-Accept = base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
    // The GUID is a constant from the RFC: every server appends the same one.
    assert_eq!(derive_accept_key(SAMPLE_KEY.as_bytes()), SAMPLE_ACCEPT);
    // ANCHOR_END: accept_key
}

// ANCHOR: masked_frame
/// A single, final client frame: the first byte is FIN (0x80) | opcode, the
/// second is MASK (0x80) | payload length (< 126 here; longer payloads put
/// 126 or 127 here and the length in the next 2 or 8 bytes). Then the 4-byte
/// masking key, then the payload XORed with the key, byte `i` with `mask[i % 4]`.
fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    assert!(payload.len() < 126, "this helper writes only the 7-bit length");
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    frame
}
// ANCHOR_END: masked_frame

/// The frame builder produces the masked "Hello" frame of RFC 6455 section 5.7.
#[test]
fn masked_frame_matches_the_rfc_example() {
    let frame = masked_frame(0x1, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
    assert_eq!(frame, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
}

/// Reads the response head (up to the blank line) byte by byte, so that not
/// a byte of what follows it is consumed. Fails after [`WAIT`].
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let read = timeout(WAIT, async {
        while !head.ends_with(b"\r\n\r\n") {
            let byte = tcp.read_u8().await.expect("server closed before the end of the head");
            head.push(byte);
            assert!(head.len() < 4096, "response head too long: {head:?}");
        }
    });
    read.await.unwrap_or_else(|_| panic!("no complete response head within {WAIT:?}"));
    String::from_utf8(head).expect("the response head is ASCII")
}

/// Reads exactly `n` bytes, within [`WAIT`].
async fn read_bytes(tcp: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    timeout(WAIT, tcp.read_exact(&mut bytes))
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} bytes within {WAIT:?}"))
        .expect("read from the server");
    bytes
}

/// The real echo server answers the RFC sample request with `101` and the
/// RFC's accept value, echoes a hand-masked text frame unmasked, and answers
/// a close frame with its own before closing the TCP connection.
#[tokio::test]
async fn echo_server_speaks_the_rfc_bytes() {
    let server = Server::start("echo_server", &[]).await;
    let mut tcp = TcpStream::connect(&server.addr).await.expect("connect to echo_server");

    // ANCHOR: request
    let request = "GET /chat HTTP/1.1\r\n\
                   Host: server.example.com\r\n\
                   Upgrade: websocket\r\n\
                   Connection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\n\
                   \r\n";
    // ANCHOR_END: request
    tcp.write_all(request.as_bytes()).await.expect("send the upgrade request");

    let head = read_head(&mut tcp).await;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 101 "), "status line: {status:?}");
    // Header names are case-insensitive (tungstenite writes them in lower case).
    let accept = lines
        .filter_map(|line| line.split_once(": "))
        .find(|(name, _)| name.eq_ignore_ascii_case("Sec-WebSocket-Accept"))
        .map(|(_, value)| value);
    assert_eq!(accept, Some(SAMPLE_ACCEPT), "response head: {head:?}");

    // ANCHOR: frames
    // Client to server: "Hello" as a masked text frame (opcode 0x1).
    let hello = masked_frame(0x1, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
    tcp.write_all(&hello).await.expect("send the text frame");
    // Server to client: FIN | text, no mask bit, length 5, the plain payload.
    assert_eq!(read_bytes(&mut tcp, 7).await, [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);

    // A close frame (opcode 0x8) whose payload is the code 1000 (0x03e8,
    // big-endian). The server answers with the same code, unmasked.
    let close = masked_frame(0x8, &1000u16.to_be_bytes(), [0x01, 0x02, 0x03, 0x04]);
    tcp.write_all(&close).await.expect("send the close frame");
    assert_eq!(read_bytes(&mut tcp, 4).await, [0x88, 0x02, 0x03, 0xe8]);
    // ANCHOR_END: frames

    // After the close handshake the server closes the TCP connection: the
    // next read sees end of stream, not more bytes.
    let mut rest = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("server kept the TCP connection open for {WAIT:?}"))
        .expect("read to end of stream");
    assert!(rest.is_empty(), "unexpected bytes after the close frame: {rest:?}");

    server.stop().await;
}

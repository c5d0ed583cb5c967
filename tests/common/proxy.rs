//! A TCP proxy a test can cut (tests/chat_client.rs, tests/browser.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// What [`Proxy::cut`] does to each connection it carries.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// Closes both sides: the server sees the client go at once.
    Both,
    /// Closes the client's side and keeps the server's open, unread: to the
    /// server the client is still there (its name still held in its rooms),
    /// until [`Proxy::release`].
    KeepServerSide,
}

/// A TCP proxy between a client and a server: the test drops the client's
/// connection as a network would while the server, and the rooms' history,
/// stay up (what a server restart cannot show), and can turn the client
/// away until the test is ready for it to come back.
pub struct Proxy {
    /// `ws://` URL of the proxy, for the client.
    pub url: String,
    refusing: Arc<AtomicBool>,
    cuts: broadcast::Sender<Cut>,
    /// Server sides kept open by [`Cut::KeepServerSide`].
    held: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `server_addr` (`IP:PORT`), connecting anew each time: a server
    /// restarted on that port is reached again.
    pub async fn start(server_addr: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let url = format!("ws://{}", listener.local_addr().expect("proxy address"));
        let refusing = Arc::new(AtomicBool::new(false));
        let (cuts, _) = broadcast::channel(4);
        let held = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (server_addr, refusing, cuts, held) =
                (server_addr.to_string(), refusing.clone(), cuts.clone(), held.clone());
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else { continue };
                    if refusing.load(Ordering::SeqCst) {
                        continue; // dropped: closed before any handshake
                    }
                    let cut = cuts.subscribe();
                    tokio::spawn(forward(client, server_addr.clone(), cut, held.clone()));
                }
            }
        });
        Proxy { url, refusing, cuts, held, accept }
    }

    /// While `refusing`, new connections are closed at once (the client's
    /// handshake fails, as with a server that is down); the ones already
    /// open are not touched.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Ends every connection open now, the way `how` says.
    pub fn cut(&self, how: Cut) {
        // No receiver means no connection to cut.
        let _ = self.cuts.send(how);
    }

    /// Closes the server sides kept by [`Cut::KeepServerSide`].
    pub fn release(&self) {
        self.held.lock().expect("held sockets").clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One proxied connection: bytes both ways until either side closes or the
/// test cuts it.
async fn forward(
    mut client: TcpStream,
    server_addr: String,
    mut cut: broadcast::Receiver<Cut>,
    held: Arc<Mutex<Vec<TcpStream>>>,
) {
    let Ok(mut server) = TcpStream::connect(&server_addr).await else { return };
    let how = tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => return,
        how = cut.recv() => how,
    };
    drop(client);
    if let Ok(Cut::KeepServerSide) = how {
        held.lock().expect("held sockets").push(server);
    }
}

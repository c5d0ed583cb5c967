//! Redis, the cluster's engine (tests/cluster.rs and the clients'
//! failover tests): one `redis-server` per test on a free loopback port.

use tokio::process::Command;

use super::*;

/// Debian's `redis-server`, which the cluster tests start, one per test.
pub fn redis_component() -> Component {
    let probe = std::process::Command::new("redis-server").arg("--version").output();
    let missing = match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`redis-server --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `redis-server`: {e}")),
    };
    Component { name: "redis-server", install: "apt-get install redis-server", missing }
}

/// A `redis-server` of the test's own on a free loopback port, with
/// persistence off: it starts empty and leaves no file behind. It is killed
/// when dropped.
pub struct RedisServer {
    port: u16,
    /// `None` while stopped.
    program: Option<Program>,
}

impl RedisServer {
    /// Starts it and waits until it accepts connections.
    pub async fn start() -> RedisServer {
        let port = free_port();
        RedisServer { port, program: Some(Self::launch(port).await) }
    }

    async fn launch(port: u16) -> Program {
        let mut command = Command::new("redis-server");
        let port = port.to_string();
        command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        let mut program = Program::spawn(command);
        program.wait_for(|line| line.contains("Ready to accept connections")).await;
        program
    }

    /// `redis://127.0.0.1:PORT`, for `chat_server --redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Shuts it down (SIGTERM, with nothing to save) and waits for it to
    /// exit: from now on its port refuses connections. The port is kept
    /// for [`RedisServer::restart`].
    pub async fn stop(&mut self) {
        let mut program = self.program.take().expect("redis-server is running");
        program.signal("TERM");
        assert_eq!(program.exit_code().await, 0, "redis-server exits 0 on SIGTERM");
    }

    /// Starts a new, empty redis-server on the same port, after
    /// [`RedisServer::stop`].
    pub async fn restart(&mut self) {
        assert!(self.program.is_none(), "restart follows stop");
        self.program = Some(Self::launch(self.port).await);
    }
}

// ---- a TCP proxy a test can cut (tests/chat_client.rs, tests/browser.rs) --

//! Socket options of the API listener, inherited by every connection it accepts (Linux copies
//! them from the listening socket): what bounds a stream client at the TCP level.
//!
//! A stream connection holds at most [`super::stream::CONNECTION_BUFFER`] messages in the
//! server's memory plus hyper's write queue (at most 16 chunks); beyond that the kernel's send
//! buffer takes what the peer has not acknowledged. Left to autotuning that buffer grows up to
//! `net.ipv4.tcp_wmem`'s maximum (4 MiB by default; 2.4 MB was measured queued for one stuck
//! client), so it is fixed at [`SEND_BUFFER`] (the kernel doubles it for bookkeeping): ample
//! for a LAN, and what each stuck client can cost the host. A peer that stops reading
//! altogether closes its receive window; `TCP_USER_TIMEOUT` makes the kernel drop the
//! connection once queued data has waited that long (Linux applies it to zero-window probing
//! too), which ends the connection's task and frees all of the above.
//! `TCP_NODELAY`: stream events are small writes that should leave at once, not wait for the
//! previous one's acknowledgement.

use std::time::Duration;
use tokio::net::TcpListener;

/// Kernel send buffer per connection.
pub const SEND_BUFFER: usize = 256 * 1024;

/// Default of `--client-stall-timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Applies the options to the listener; connections accepted afterwards inherit them.
pub fn tune_listener(listener: &TcpListener, stall_timeout: Duration) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(listener);
    socket.set_tcp_nodelay(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(stall_timeout))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stall_timeout;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The options really land on accepted sockets (inheritance is a Linux behaviour this
    /// module relies on).
    #[tokio::test]
    async fn accepted_connections_inherit_the_options() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        super::tune_listener(&listener, std::time::Duration::from_millis(1500)).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().unwrap());
        // Linux reports twice the requested size; autotuning would start at 16 KiB.
        assert!(socket.send_buffer_size().unwrap() >= super::SEND_BUFFER);
        #[cfg(target_os = "linux")]
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(std::time::Duration::from_millis(1500))
        );
    }
}

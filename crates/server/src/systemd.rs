//! systemd's readiness protocol (`Type=notify`): a datagram to `$NOTIFY_SOCKET` saying the
//! broker is ready or stopping. Without that variable (not started by systemd) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd, if systemd asked for it. Failures are logged,
/// never fatal: the broker works the same without a service manager listening.
pub fn notify(state: &str) {
    let Some(socket_path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let path = socket_path.as_encoded_bytes();
        match path.strip_prefix(b"@") {
            // An abstract socket: '@' stands for the leading NUL byte.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &address)
            }
            None => socket.send_to(state.as_bytes(), &socket_path),
        }
    });
    if let Err(error) = sent {
        tracing::warn!(%error, state, "cannot notify systemd");
    }
}

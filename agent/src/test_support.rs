//! Helpers shared by the unit tests of this crate.

use std::net::SocketAddr;

/// A loopback port that refuses connections for as long as the returned socket lives: bound,
/// never listened on. Binding a listener and dropping it is not enough: a process that another
/// test thread is spawning holds a copy of every descriptor between its fork and its exec, so a
/// dropped listener can still accept for that long (and the port could be reused meanwhile).
pub(crate) fn refusing_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("the bound address");
    (socket, addr)
}

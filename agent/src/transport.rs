//! Peer transport: authenticated frames over TCP between the nodes' `listen` addresses.
//!
//! Each node dials every peer once and sends on that connection; it receives on the
//! connections its peers dial. On accept, the receiver sends a greeting with a fresh random
//! nonce. Every frame after it carries the sender's and receiver's ids, a sequence number that
//! starts at 1 and grows by one, the payload, and an HMAC-SHA256 tag over the nonce and all of
//! those, keyed with the cluster secret. The receiver checks the length bound before reading,
//! the tag before decoding, the ids, and that the sequence number is exactly the next one; any
//! failure is logged and the connection closed. So a frame cannot be forged without the key, nor
//! replayed on the same connection (sequence) or on another (nonce), nor redirected to another
//! node (ids), and protobuf decoding only ever sees authenticated, bounded input.
//!
//! Senders never block the Raft loop: the loop hands messages to a bounded queue per peer with
//! `try_send` and drops them when it is full (Raft retransmits). A sender that cannot connect or
//! write reports the peer unreachable, drops what is queued, and retries with jittered backoff.
//! Senders also send a small keepalive when idle, so that every node knows which peers it can
//! hear (followers exchange no Raft messages with each other), and so that a connection through
//! a silent partition is noticed (`TCP_USER_TIMEOUT`) and replaced once the path heals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep, timeout, Instant};
use tracing::{debug, info, warn};

use ha_agent_core::{HealthAdvert, Message};

/// Largest frame accepted, header and tag included. Raft messages here are small (no
/// application data beyond a few commands), so this is generous.
pub const MAX_FRAME: usize = 1 << 20;
const GREETING_MAGIC: &[u8; 4] = b"HAAG";
const PROTOCOL_VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const GREETING_LEN: usize = 4 + 1 + NONCE_LEN;
const HEADER_LEN: usize = 1 + 8 + 8 + 8;
const TAG_LEN: usize = 32;
const MAC_DOMAIN: &[u8] = b"ha-agent frame v1";
const KIND_RAFT: u8 = 1;
const KIND_KEEPALIVE: u8 = 2;
const KIND_HEALTH: u8 = 3;
const HEALTH_LEN: usize = 1 + 8 + 8;
/// Inbound connections at once, authenticated or not.
const MAX_INBOUND: usize = 32;
/// Messages queued per peer before new ones are dropped.
const SEND_QUEUE: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// Timing of the transport, derived from the Raft timings.
#[derive(Clone, Copy, Debug)]
pub struct TransportTimings {
    /// How long an idle sender waits before sending a keepalive.
    pub keepalive: Duration,
    /// An inbound connection with no valid frame for this long is closed.
    pub idle_close: Duration,
    /// Connect, greeting and write deadline; also the TCP user timeout.
    pub io_deadline: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl TransportTimings {
    /// Timings for a group with these Raft settings.
    pub fn new(heartbeat: Duration, election_timeout: Duration) -> TransportTimings {
        TransportTimings {
            keepalive: (election_timeout / 4).max(heartbeat),
            idle_close: election_timeout * 3,
            io_deadline: election_timeout,
            max_backoff: (election_timeout / 2).max(Duration::from_millis(50)),
        }
    }
}

/// Who we are and whom we talk to.
#[derive(Clone)]
pub struct TransportIdentity {
    pub node_id: u64,
    pub key: Arc<[u8]>,
    pub peers: BTreeMap<u64, SocketAddr>,
    pub timings: TransportTimings,
}

/// What the transport tells the Raft loop.
#[derive(Debug)]
pub enum PeerEvent {
    /// An authenticated Raft message.
    Message(Message),
    /// An authenticated frame arrived from this peer (any kind).
    Contact(u64),
    /// The peer advertised its health.
    Health { peer: u64, advert: HealthAdvert },
    /// Sending to this peer failed; it is unreachable until a connection succeeds.
    Unreachable(u64),
    /// A connection to this peer was established.
    Connected(u64),
}

/// What goes to a peer.
#[derive(Debug)]
enum Outgoing {
    Raft(Message),
    Health(HealthAdvert),
}

/// The sending side: one queue per peer.
pub struct Outbox {
    queues: BTreeMap<u64, mpsc::Sender<Outgoing>>,
}

impl Outbox {
    /// Queues a message for its peer without waiting. Returns false when it was dropped (unknown
    /// peer or full queue); Raft recovers from dropped messages by retransmitting.
    pub fn send(&self, message: Message) -> bool {
        match self.queues.get(&message.get_to()) {
            Some(queue) => queue.try_send(Outgoing::Raft(message)).is_ok(),
            None => false,
        }
    }

    /// Sends this node's health advert to every peer, without waiting (a dropped advert is
    /// repeated by the next one).
    pub fn advertise(&self, advert: HealthAdvert) {
        for queue in self.queues.values() {
            let _ = queue.try_send(Outgoing::Health(advert));
        }
    }
}

fn encode_advert(advert: &HealthAdvert) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEALTH_LEN);
    out.push(u8::from(advert.healthy));
    out.extend_from_slice(&advert.priority.to_be_bytes());
    out.extend_from_slice(&advert.healthy_for_ms.to_be_bytes());
    out
}

fn decode_advert(bytes: &[u8]) -> Option<HealthAdvert> {
    if bytes.len() != HEALTH_LEN || bytes[0] > 1 {
        return None;
    }
    Some(HealthAdvert {
        healthy: bytes[0] == 1,
        priority: i64::from_be_bytes(bytes[1..9].try_into().ok()?),
        healthy_for_ms: u64::from_be_bytes(bytes[9..17].try_into().ok()?),
    })
}

/// Starts one sender task per peer.
pub fn start_senders(identity: &TransportIdentity, events: mpsc::Sender<PeerEvent>) -> Outbox {
    let mut queues = BTreeMap::new();
    for (&peer, &address) in &identity.peers {
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        queues.insert(peer, tx);
        tokio::spawn(run_sender(
            identity.clone(),
            peer,
            address,
            rx,
            events.clone(),
        ));
    }
    Outbox { queues }
}

/// Accepts peer connections until the task is dropped.
pub async fn run_listener(
    listener: TcpListener,
    identity: TransportIdentity,
    events: mpsc::Sender<PeerEvent>,
) {
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting a peer connection failed");
                sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(%remote, limit = MAX_INBOUND, "too many inbound peer connections; closing this one");
            continue;
        };
        let identity = identity.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(reason) = serve_inbound(stream, &identity, &events).await {
                warn!(%remote, %reason, "closed inbound peer connection");
            }
        });
    }
}

/// Reads frames from one inbound connection. Returns why it ended.
async fn serve_inbound(
    mut stream: TcpStream,
    identity: &TransportIdentity,
    events: &mpsc::Sender<PeerEvent>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut greeting = Vec::with_capacity(GREETING_LEN);
    greeting.extend_from_slice(GREETING_MAGIC);
    greeting.push(PROTOCOL_VERSION);
    greeting.extend_from_slice(&nonce);
    timeout(identity.timings.io_deadline, stream.write_all(&greeting))
        .await
        .map_err(|_| "greeting timed out".to_string())?
        .map_err(|e| format!("greeting failed: {e}"))?;

    let mut expected_seq: u64 = 1;
    let mut sender: Option<u64> = None;
    let mut buf = Vec::new();
    loop {
        let mut len_bytes = [0u8; 4];
        match timeout(
            identity.timings.idle_close,
            stream.read_exact(&mut len_bytes),
        )
        .await
        {
            Err(_) => return Err("no frame within the idle limit".into()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes(len_bytes) as usize;
        if !(HEADER_LEN + TAG_LEN..=MAX_FRAME).contains(&len) {
            return Err(format!(
                "frame of {len} bytes is outside the allowed {}..={MAX_FRAME}",
                HEADER_LEN + TAG_LEN
            ));
        }
        buf.resize(len, 0);
        timeout(identity.timings.io_deadline, stream.read_exact(&mut buf))
            .await
            .map_err(|_| "frame body timed out".to_string())?
            .map_err(|e| format!("read failed: {e}"))?;
        let frame = open_frame(&identity.key, &nonce, &buf)?;
        if frame.to != identity.node_id {
            return Err(format!(
                "frame addressed to node {}, this is node {}",
                frame.to, identity.node_id
            ));
        }
        if !identity.peers.contains_key(&frame.from) {
            return Err(format!(
                "frame from node {}, which is not a peer",
                frame.from
            ));
        }
        if sender.is_some_and(|s| s != frame.from) {
            return Err(format!(
                "frame from node {} on a connection of node {}",
                frame.from,
                sender.unwrap_or_default()
            ));
        }
        if frame.seq != expected_seq {
            return Err(format!(
                "frame from node {} has sequence {}, expected {expected_seq}: replayed or reordered",
                frame.from, frame.seq
            ));
        }
        if sender.is_none() {
            debug!(peer = frame.from, "inbound peer connection authenticated");
        }
        sender = Some(frame.from);
        expected_seq += 1;
        let event = match frame.kind {
            KIND_KEEPALIVE => PeerEvent::Contact(frame.from),
            KIND_HEALTH => match decode_advert(frame.payload) {
                Some(advert) => PeerEvent::Health {
                    peer: frame.from,
                    advert,
                },
                None => {
                    return Err(format!(
                        "health advert from node {} does not decode",
                        frame.from
                    ))
                }
            },
            KIND_RAFT => {
                let message = ha_agent_core::decode_message(frame.payload).map_err(|e| {
                    format!("raft message from node {} does not decode: {e}", frame.from)
                })?;
                if message.get_from() != frame.from || message.get_to() != frame.to {
                    return Err(format!(
                        "raft message claims {} -> {} inside a frame {} -> {}",
                        message.get_from(),
                        message.get_to(),
                        frame.from,
                        frame.to
                    ));
                }
                PeerEvent::Message(message)
            }
            other => return Err(format!("unknown frame kind {other}")),
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
    }
}

struct Frame<'a> {
    kind: u8,
    from: u64,
    to: u64,
    seq: u64,
    payload: &'a [u8],
}

fn mac_for(key: &[u8], nonce: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(MAC_DOMAIN);
    mac.update(nonce);
    mac
}

/// Builds a frame (length prefix included).
fn seal_frame(
    key: &[u8],
    nonce: &[u8],
    kind: u8,
    from: u64,
    to: u64,
    seq: u64,
    payload: &[u8],
) -> Vec<u8> {
    let len = HEADER_LEN + payload.len() + TAG_LEN;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(&to.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    let mut mac = mac_for(key, nonce);
    mac.update(&out[4..]);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// Checks a frame's tag and splits it (without the length prefix).
fn open_frame<'a>(key: &[u8], nonce: &[u8], body: &'a [u8]) -> Result<Frame<'a>, String> {
    let (signed, tag) = body.split_at(body.len() - TAG_LEN);
    let mut mac = mac_for(key, nonce);
    mac.update(signed);
    mac.verify_slice(tag)
        .map_err(|_| "frame failed authentication (wrong cluster key, or tampered)".to_string())?;
    let u64_at = |at: usize| u64::from_be_bytes(signed[at..at + 8].try_into().expect("8 bytes"));
    Ok(Frame {
        kind: signed[0],
        from: u64_at(1),
        to: u64_at(9),
        seq: u64_at(17),
        payload: &signed[HEADER_LEN..],
    })
}

/// Sends to one peer for as long as the outbox exists.
async fn run_sender(
    identity: TransportIdentity,
    peer: u64,
    address: SocketAddr,
    mut queue: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<PeerEvent>,
) {
    let timings = identity.timings;
    let mut backoff = Duration::from_millis(20);
    let mut reported_down = false;
    loop {
        match connect(&identity, address).await {
            Ok((stream, nonce)) => {
                info!(peer, %address, "connected to peer");
                let _ = events.send(PeerEvent::Connected(peer)).await;
                reported_down = false;
                backoff = Duration::from_millis(20);
                match send_until_error(&identity, peer, stream, &nonce, &mut queue).await {
                    None => return,
                    Some(reason) => warn!(peer, %address, %reason, "peer connection lost"),
                }
            }
            Err(reason) => {
                if !reported_down {
                    warn!(peer, %address, %reason, "peer unreachable");
                } else {
                    debug!(peer, %address, %reason, "peer still unreachable");
                }
            }
        }
        if !reported_down {
            reported_down = true;
            if events.send(PeerEvent::Unreachable(peer)).await.is_err() {
                return;
            }
        }
        // Wait before the next attempt, discarding what is queued meanwhile: Raft will
        // send fresh messages once the peer answers again.
        let jitter = rand::thread_rng().gen_range(0.5..1.0);
        let deadline = Instant::now() + backoff.mul_f64(jitter);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                received = queue.recv() => if received.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(timings.max_backoff);
    }
}

async fn connect(
    identity: &TransportIdentity,
    address: SocketAddr,
) -> Result<(TcpStream, [u8; NONCE_LEN]), String> {
    let deadline = identity.timings.io_deadline;
    let mut stream = timeout(deadline, TcpStream::connect(address))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect failed: {e}"))?;
    let _ = stream.set_nodelay(true);
    // Unacknowledged data older than this kills the connection, so a silent partition is
    // noticed and the connection replaced once the path heals.
    let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(deadline));
    let mut greeting = [0u8; GREETING_LEN];
    timeout(deadline, stream.read_exact(&mut greeting))
        .await
        .map_err(|_| "no greeting from peer".to_string())?
        .map_err(|e| format!("reading the greeting failed: {e}"))?;
    if &greeting[..4] != GREETING_MAGIC || greeting[4] != PROTOCOL_VERSION {
        return Err("the peer's greeting is not an ha-agent protocol v1 greeting".into());
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&greeting[5..]);
    Ok((stream, nonce))
}

/// Returns None when the outbox was dropped (shutdown), or why the connection failed.
async fn send_until_error(
    identity: &TransportIdentity,
    peer: u64,
    mut stream: TcpStream,
    nonce: &[u8],
    queue: &mut mpsc::Receiver<Outgoing>,
) -> Option<String> {
    let mut seq = 0u64;
    let mut buf = [0u8; 64];
    loop {
        let (kind, payload) = tokio::select! {
            received = queue.recv() => match received {
                Some(Outgoing::Raft(message)) => (KIND_RAFT, ha_agent_core::encode_message(&message)),
                Some(Outgoing::Health(advert)) => (KIND_HEALTH, encode_advert(&advert)),
                None => return None,
            },
            _ = sleep(identity.timings.keepalive) => (KIND_KEEPALIVE, Vec::new()),
            // The receiver never writes after its greeting: readable means closed or broken.
            read = stream.read(&mut buf) => return Some(match read {
                Ok(0) => "peer closed the connection".to_string(),
                Ok(_) => "peer sent unexpected data".to_string(),
                Err(e) => format!("connection error: {e}"),
            }),
        };
        if HEADER_LEN + payload.len() + TAG_LEN > MAX_FRAME {
            warn!(
                peer,
                bytes = payload.len(),
                "message too large for a frame; dropped"
            );
            continue;
        }
        seq += 1;
        let frame = seal_frame(
            &identity.key,
            nonce,
            kind,
            identity.node_id,
            peer,
            seq,
            &payload,
        );
        match timeout(identity.timings.io_deadline, stream.write_all(&frame)).await {
            Err(_) => return Some("write timed out".into()),
            Ok(Err(e)) => return Some(format!("write failed: {e}")),
            Ok(Ok(())) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    #[test]
    fn health_adverts_round_trip_and_junk_is_refused() {
        let advert = HealthAdvert {
            healthy: true,
            priority: -3,
            healthy_for_ms: 12_345,
        };
        assert_eq!(decode_advert(&encode_advert(&advert)), Some(advert));
        assert_eq!(decode_advert(&[2; HEALTH_LEN]), None);
        assert_eq!(decode_advert(&[1; 3]), None);
    }

    #[test]
    fn sealed_frames_open_with_the_same_key_and_nonce() {
        let frame = seal_frame(KEY, &NONCE, KIND_RAFT, 1, 2, 3, b"payload");
        let opened = open_frame(KEY, &NONCE, &frame[4..]).expect("opens");
        assert_eq!(
            (
                opened.kind,
                opened.from,
                opened.to,
                opened.seq,
                opened.payload
            ),
            (KIND_RAFT, 1, 2, 3, &b"payload"[..])
        );
    }

    #[test]
    fn wrong_key_wrong_nonce_and_tampering_are_rejected() {
        let frame = seal_frame(KEY, &NONCE, KIND_RAFT, 1, 2, 3, b"payload");
        assert!(open_frame(b"another key entirely, 32 bytes!!", &NONCE, &frame[4..]).is_err());
        assert!(open_frame(KEY, &[8; NONCE_LEN], &frame[4..]).is_err());
        for i in 4..frame.len() {
            let mut tampered = frame.clone();
            tampered[i] ^= 1;
            assert!(
                open_frame(KEY, &NONCE, &tampered[4..]).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    fn identity(node_id: u64, peers: &[(u64, SocketAddr)]) -> TransportIdentity {
        TransportIdentity {
            node_id,
            key: Arc::from(KEY),
            peers: peers.iter().copied().collect(),
            timings: TransportTimings::new(Duration::from_millis(100), Duration::from_secs(1)),
        }
    }

    fn vote_request(from: u64, to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(raft::prelude::MessageType::MsgRequestVote);
        m.set_from(from);
        m.set_to(to);
        m.set_term(99);
        m
    }

    async fn greeting_nonce(stream: &mut TcpStream) -> [u8; NONCE_LEN] {
        let mut greeting = [0u8; GREETING_LEN];
        stream.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting[..4], GREETING_MAGIC);
        greeting[5..].try_into().unwrap()
    }

    /// The connection is closed by the receiver (read returns 0 or an error).
    async fn assert_closed(stream: &mut TcpStream) {
        let mut buf = [0u8; 1];
        let read = timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the receiver must close the connection, got {read:?}"
        );
    }

    /// Frames without the key, oversized frames, replays and redirected frames reach nothing,
    /// and the listener keeps serving authenticated peers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_authenticated_fresh_frames_get_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = identity(1, &[(2, "127.0.0.1:9".parse().unwrap())]);
        let (tx, mut rx) = mpsc::channel(16);
        let server = tokio::spawn(run_listener(listener, me, tx));
        let payload = ha_agent_core::encode_message(&vote_request(2, 1));

        // Wrong key.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let nonce = greeting_nonce(&mut s).await;
        let forged = seal_frame(
            b"not the cluster key at all......",
            &nonce,
            KIND_RAFT,
            2,
            1,
            1,
            &payload,
        );
        s.write_all(&forged).await.unwrap();
        assert_closed(&mut s).await;

        // Oversized length prefix: refused before reading the body.
        let mut s = TcpStream::connect(addr).await.unwrap();
        greeting_nonce(&mut s).await;
        s.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        assert_closed(&mut s).await;

        // Garbage.
        let mut s = TcpStream::connect(addr).await.unwrap();
        greeting_nonce(&mut s).await;
        s.write_all(&[0xff; 200]).await.unwrap();
        assert_closed(&mut s).await;

        // A valid frame gets through once...
        let mut s = TcpStream::connect(addr).await.unwrap();
        let nonce = greeting_nonce(&mut s).await;
        let valid = seal_frame(KEY, &nonce, KIND_RAFT, 2, 1, 1, &payload);
        s.write_all(&valid).await.unwrap();
        let got = timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(got, PeerEvent::Message(m) if m.get_from() == 2 && m.get_term() == 99));
        // ...but not twice on the same connection (sequence)...
        s.write_all(&valid).await.unwrap();
        assert_closed(&mut s).await;
        // ...nor on a new connection (nonce).
        let mut s = TcpStream::connect(addr).await.unwrap();
        greeting_nonce(&mut s).await;
        s.write_all(&valid).await.unwrap();
        assert_closed(&mut s).await;

        // A frame for another node, or from a stranger, is refused even with the key.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let nonce = greeting_nonce(&mut s).await;
        s.write_all(&seal_frame(KEY, &nonce, KIND_RAFT, 2, 3, 1, &payload))
            .await
            .unwrap();
        assert_closed(&mut s).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let nonce = greeting_nonce(&mut s).await;
        let stranger = ha_agent_core::encode_message(&vote_request(7, 1));
        s.write_all(&seal_frame(KEY, &nonce, KIND_RAFT, 7, 1, 1, &stranger))
            .await
            .unwrap();
        assert_closed(&mut s).await;

        assert!(
            rx.try_recv().is_err(),
            "nothing unauthenticated reached the loop"
        );
        // The listener still serves a real peer afterwards.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let nonce = greeting_nonce(&mut s).await;
        s.write_all(&seal_frame(KEY, &nonce, KIND_KEEPALIVE, 2, 1, 1, &[]))
            .await
            .unwrap();
        let got = timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(got, PeerEvent::Contact(2)));
        server.abort();
    }

    /// Two transports deliver messages to each other; a dead peer is reported unreachable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senders_deliver_and_report_unreachable_peers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_refusing, dead) = crate::test_support::refusing_port();
        let receiver = identity(1, &[(2, "127.0.0.1:9".parse().unwrap())]);
        let (rx_tx, mut received) = mpsc::channel(16);
        let server = tokio::spawn(run_listener(listener, receiver, rx_tx));
        let sender = identity(2, &[(1, addr), (3, dead)]);
        let (ev_tx, mut events) = mpsc::channel(16);
        let outbox = start_senders(&sender, ev_tx);
        assert!(outbox.send(vote_request(2, 1)));
        let got = timeout(Duration::from_secs(3), received.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(got, PeerEvent::Message(m) if m.get_to() == 1));
        let mut saw_unreachable = false;
        for _ in 0..4 {
            match timeout(Duration::from_secs(3), events.recv()).await {
                Ok(Some(PeerEvent::Unreachable(3))) => {
                    saw_unreachable = true;
                    break;
                }
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
        assert!(saw_unreachable, "the dead peer 3 is reported unreachable");
        assert!(
            !outbox.send(vote_request(2, 9)),
            "unknown peers are refused"
        );
        server.abort();
    }
}

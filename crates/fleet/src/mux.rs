//! A client of OpenSSH's control-master protocol (PROTOCOL.mux in
//! OpenSSH's source), so that a command on a node with an open control
//! master costs a unix-socket exchange instead of one `ssh` process (its
//! start, its OpenSSL and its configuration parsing).
//!
//! Only what `cm do` needs: the hello, a "passenger" session (the command,
//! the environment, and our stdin/stdout/stderr passed as file
//! descriptors), its exit status, and asking a master to exit. The session
//! is what `ssh` itself asks for: no terminal, no X11, agent forwarding as
//! the master's configuration says, and the whole environment offered, of
//! which the master passes on only what its `SendEnv` allows (as ssh does).
//!
//! Written here rather than taken from `openssh-mux-client`: that crate
//! sends no environment, so `LANG` and every `SendEnv` variable would reach
//! a node when cm starts ssh itself and not when it talks to the master.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

const MUX_MSG_HELLO: u32 = 0x0000_0001;
const MUX_C_NEW_SESSION: u32 = 0x1000_0002;
const MUX_C_TERMINATE: u32 = 0x1000_0005;
const MUX_S_OK: u32 = 0x8000_0001;
const MUX_S_PERMISSION_DENIED: u32 = 0x8000_0002;
const MUX_S_FAILURE: u32 = 0x8000_0003;
const MUX_S_EXIT_MESSAGE: u32 = 0x8000_0004;
const MUX_S_SESSION_OPENED: u32 = 0x8000_0006;
const MUX_S_TTY_ALLOC_FAIL: u32 = 0x8000_0008;
const VERSION: u32 = 4;
/// Largest message we accept from a master (ssh's own limit is 256 KiB).
const MAX_MESSAGE: usize = 256 * 1024;
/// Environment offered with a session, at most (the master filters it).
const MAX_ENV_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// No master answers on the socket: nothing was asked of any node, so
    /// starting ssh instead is safe.
    #[error("no control master: {0}")]
    NoMaster(std::io::Error),
    #[error("the control master refused the session: {0}")]
    Refused(String),
    #[error("control master: {0}")]
    Protocol(String),
    #[error("control master: {0}")]
    Io(#[from] std::io::Error),
}

/// A mux message being built: SSH wire format (big-endian u32, strings
/// with a u32 length).
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u32) -> Message {
        let mut m = Message(vec![0; 4]);
        m.u32(kind);
        m
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn string(&mut self, s: &[u8]) -> &mut Self {
        // A mux string is a path or a command line, far below 4 GiB.
        #[allow(clippy::cast_possible_truncation)]
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s);
        self
    }
    /// The packet with its length in front.
    fn finish(mut self) -> Vec<u8> {
        // A mux packet holds a few short strings, far below 4 GiB.
        #[allow(clippy::cast_possible_truncation)]
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

/// A message read from a master.
struct Reply {
    kind: u32,
    body: Vec<u8>,
    at: usize,
}

impl Reply {
    fn u32(&mut self) -> Result<u32, MuxError> {
        let b = self
            .body
            .get(self.at..self.at + 4)
            .ok_or_else(|| MuxError::Protocol("short message".into()))?;
        self.at += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, MuxError> {
        let n = self.u32()? as usize;
        let b = self
            .body
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| MuxError::Protocol("short string".into()))?;
        self.at += n;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
}

async fn read_reply(s: &mut UnixStream) -> Result<Option<Reply>, MuxError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(MuxError::Protocol(format!("a message of {len} bytes")));
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    let mut r = Reply {
        kind: 0,
        body,
        at: 0,
    };
    r.kind = r.u32()?;
    Ok(Some(r))
}

/// Connect and exchange hellos. Any failure here means no usable master.
async fn connect(socket: &Path) -> Result<UnixStream, MuxError> {
    let mut s = UnixStream::connect(socket)
        .await
        .map_err(MuxError::NoMaster)?;
    let mut hello = Message::new(MUX_MSG_HELLO);
    hello.u32(VERSION);
    s.write_all(&hello.finish())
        .await
        .map_err(MuxError::NoMaster)?;
    let gone = || MuxError::NoMaster(std::io::ErrorKind::UnexpectedEof.into());
    let mut r = read_reply(&mut s)
        .await
        .map_err(|e| match e {
            MuxError::Io(io) => MuxError::NoMaster(io),
            e => e,
        })?
        .ok_or_else(gone)?;
    if r.kind != MUX_MSG_HELLO {
        return Err(MuxError::Protocol(format!(
            "hello answered with {:#x}",
            r.kind
        )));
    }
    let v = r.u32()?;
    if v != VERSION {
        return Err(MuxError::Protocol(format!(
            "protocol version {v}, not {VERSION}"
        )));
    }
    Ok(s)
}

/// Pass one file descriptor, with the one byte of data ssh sends beside it.
async fn send_fd(s: &UnixStream, fd: &OwnedFd) -> Result<(), MuxError> {
    loop {
        s.writable().await?;
        let sent = s.try_io(tokio::io::Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            let fds = [fd.as_fd()];
            control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
            rustix::net::sendmsg(
                s,
                &[IoSlice::new(&[0])],
                &mut control,
                rustix::net::SendFlags::empty(),
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(MuxError::Protocol("could not pass a descriptor".into())),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The environment offered to the master: `NAME=value` strings.
fn environment() -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut total = 0;
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        if total + kv.len() + 4 > MAX_ENV_BYTES {
            continue;
        }
        total += kv.len() + 4;
        env.push(kv);
    }
    env
}

/// A command running on a node through its control master.
#[derive(Debug)]
pub struct Session {
    control: UnixStream,
    id: u32,
}

/// The read ends of a session's stdout and stderr.
#[derive(Debug)]
pub struct Output {
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

fn pipe_pair() -> Result<(pipe::Receiver, OwnedFd), MuxError> {
    let (r, w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(std::io::Error::from)?;
    Ok((pipe::Receiver::from_owned_fd(r)?, w))
}

impl Session {
    /// Start `command` through the master on `socket`, with stdin from
    /// /dev/null. [`MuxError::NoMaster`] when no master answers (nothing
    /// was started); any other error after the request may or may not
    /// have reached the node.
    pub async fn open(socket: &Path, command: &str) -> Result<(Session, Output), MuxError> {
        let mut control = connect(socket).await?;
        let stdin: OwnedFd = std::fs::File::open("/dev/null")?.into();
        let (stdout, out_w) = pipe_pair()?;
        let (stderr, err_w) = pipe_pair()?;
        let mut m = Message::new(MUX_C_NEW_SESSION);
        m.u32(1) // request id
            .string(b"") // reserved
            .u32(0) // tty
            .u32(0) // X11
            .u32(1) // agent: if the master's own ForwardAgent says so
            .u32(0) // subsystem
            .u32(0xffff_ffff) // no escape character
            .string(b"") // terminal type
            .string(command.as_bytes());
        for kv in environment() {
            m.string(&kv);
        }
        control.write_all(&m.finish()).await?;
        for fd in [&stdin, &out_w, &err_w] {
            send_fd(&control, fd).await?;
        }
        // The master holds its own copies now; ours must go, or the pipes
        // never reach their end.
        drop((stdin, out_w, err_w));
        loop {
            let mut r = read_reply(&mut control)
                .await?
                .ok_or_else(|| MuxError::Protocol("closed before the session opened".into()))?;
            match r.kind {
                MUX_S_SESSION_OPENED => {
                    let _request = r.u32()?;
                    let id = r.u32()?;
                    return Ok((Session { control, id }, Output { stdout, stderr }));
                }
                MUX_S_PERMISSION_DENIED | MUX_S_FAILURE => {
                    let _request = r.u32()?;
                    return Err(MuxError::Refused(r.string()?));
                }
                MUX_S_OK => continue,
                k => return Err(MuxError::Protocol(format!("unexpected message {k:#x}"))),
            }
        }
    }

    /// Wait for the remote command's exit status; None when the master
    /// closed the session without one (ssh then exits 255, and so does
    /// this count).
    pub async fn wait(&mut self) -> Result<Option<u32>, MuxError> {
        loop {
            let Some(mut r) = read_reply(&mut self.control).await? else {
                return Ok(None);
            };
            match r.kind {
                MUX_S_EXIT_MESSAGE => {
                    let id = r.u32()?;
                    let rc = r.u32()?;
                    if id != self.id {
                        return Err(MuxError::Protocol(format!("exit of session {id}")));
                    }
                    return Ok(Some(rc));
                }
                MUX_S_TTY_ALLOC_FAIL => continue,
                k => return Err(MuxError::Protocol(format!("unexpected message {k:#x}"))),
            }
        }
    }
}

/// Ask the master on `socket` to exit (`ssh -O exit`). Ok(false) when no
/// master was there.
pub async fn terminate(socket: &Path) -> Result<bool, MuxError> {
    let mut control = match connect(socket).await {
        Ok(c) => c,
        Err(MuxError::NoMaster(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut m = Message::new(MUX_C_TERMINATE);
    m.u32(1);
    control.write_all(&m.finish()).await?;
    match read_reply(&mut control).await? {
        Some(r) if r.kind == MUX_S_OK => Ok(true),
        Some(mut r) if matches!(r.kind, MUX_S_PERMISSION_DENIED | MUX_S_FAILURE) => {
            let _request = r.u32()?;
            Err(MuxError::Refused(r.string()?))
        }
        // A master may go before it answers.
        None => Ok(true),
        Some(r) => Err(MuxError::Protocol(format!(
            "unexpected message {:#x}",
            r.kind
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_length_prefixed_ssh_wire_format() {
        let mut m = Message::new(MUX_MSG_HELLO);
        m.u32(4).string(b"ab");
        assert_eq!(
            m.finish(),
            [0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 2, b'a', b'b']
        );
        let mut r = Reply {
            kind: 0,
            body: vec![0, 0, 0, 3, b'x', b'y'],
            at: 0,
        };
        assert!(r.string().is_err(), "a string longer than the message");
    }

    #[tokio::test]
    async fn no_socket_means_no_master() {
        let dir = tempfile::tempdir().unwrap();
        let e = Session::open(&dir.path().join("none"), "true")
            .await
            .err()
            .unwrap();
        assert!(matches!(e, MuxError::NoMaster(_)), "{e}");
        assert!(!terminate(&dir.path().join("none")).await.unwrap());
    }
}

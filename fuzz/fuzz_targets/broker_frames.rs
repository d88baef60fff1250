//! Fuzzes the broker's socket protocol end to end: a real broker (in this process, driven
//! one turn at a time) and real SEQPACKET connections to it. Each input is a little program
//! of steps: send a frame of words (small numbers are cheap to reach, so opcodes, families,
//! commands and ids are found quickly), send raw bytes (the frame decoder), attach a
//! descriptor, write bytes into a memfd the broker handed out (the notice ring, an object's
//! memory: shared memory a client may scribble), open or close connections. The broker must
//! never panic, hang or crash; every reply must be a well-formed frame.
#![no_main]

use ipcshim::broker::{bind_listener, sockaddr, Broker};
use ipcshim::ipc::limits::Limits;
use ipcshim::wire;
use libfuzzer_sys::fuzz_target;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    /// A word: mostly small numbers, sometimes 32 or 64 random bits or an edge value.
    fn word(&mut self) -> Option<i64> {
        let tag = self.byte()?;
        Some(match tag {
            0..=0xbf => tag as i64 - 0x40,
            0xc0..=0xfd => {
                let b = self.bytes(4);
                let mut a = [0u8; 4];
                a[..b.len()].copy_from_slice(b);
                i32::from_le_bytes(a) as i64
            }
            0xfe => {
                let b = self.bytes(8);
                let mut a = [0u8; 8];
                a[..b.len()].copy_from_slice(b);
                i64::from_le_bytes(a)
            }
            0xff => {
                const EDGES: [i64; 10] = [i64::MIN, i64::MAX, i32::MIN as i64, i32::MAX as i64, 1 << 31, 32768, 32767, 4096, 0o1777, -1];
                EDGES[self.byte().unwrap_or(0) as usize % EDGES.len()]
            }
        })
    }
}

fn connect(path: &PathBuf) -> Option<OwnedFd> {
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if fd < 0 {
        return None;
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = sockaddr(path).ok()?;
    let r = unsafe { libc::connect(fd.as_raw_fd(), &addr as *const _ as *const libc::sockaddr, len) };
    (r == 0).then_some(fd)
}

fn socket_path() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ipcshim-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join("broker.sock")
}

fuzz_target!(|data: &[u8]| {
    let path = socket_path();
    let Ok(listener) = bind_listener(&path) else { return };
    let limits = Limits { msgmni: 4, semmni: 4, shmmni: 4, shmseg: 4, shmmax: 1 << 20, semmsl: 64, conns_per_uid: 3, ..Limits::default() };
    let Ok(mut broker) = Broker::new(listener, path.clone(), limits) else { return };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut conns: Vec<OwnedFd> = connect(&path).into_iter().collect();
    // Descriptors the broker handed out (table, ring, objects' memfds): scribbling targets.
    let mut received: Vec<OwnedFd> = Vec::new();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let mut input = Input(data);
    let mut steps = 0;
    while let Some(step) = input.byte() {
        steps += 1;
        if steps > 64 {
            break;
        }
        let current = (step >> 4) as usize;
        match step & 0x7 {
            // Raw bytes: the frame decoder.
            1 => {
                let n = input.byte().unwrap_or(0) as usize;
                let bytes = input.bytes(n).to_vec();
                if let Some(c) = conns.get(current % conns.len().max(1)) {
                    unsafe { libc::send(c.as_raw_fd(), bytes.as_ptr() as *const libc::c_void, bytes.len(), libc::MSG_NOSIGNAL) };
                }
            }
            // Write into a descriptor we were given (shared memory others can write).
            2 => {
                let which = input.byte().unwrap_or(0) as usize;
                let offset = u16::from_le_bytes([input.byte().unwrap_or(0), input.byte().unwrap_or(0)]) as i64 * 8;
                let n = (input.byte().unwrap_or(0) % 64) as usize;
                let bytes = input.bytes(n).to_vec();
                if let Some(fd) = received.get(which % received.len().max(1)) {
                    unsafe { libc::pwrite(fd.as_raw_fd(), bytes.as_ptr() as *const libc::c_void, bytes.len(), offset) };
                }
            }
            // Another connection, or close one.
            3 => {
                if step & 0x8 != 0 && !conns.is_empty() {
                    conns.remove(current % conns.len());
                } else if conns.len() < 6 {
                    conns.extend(connect(&path));
                }
            }
            // A frame of words, with a descriptor attached if bit 3 is set.
            _ => {
                let n = (input.byte().unwrap_or(0) % 12) as usize;
                let words: Vec<i64> = (0..n).map_while(|_| input.word()).collect();
                let fd = (step & 0x8 != 0).then(|| devnull.as_raw_fd());
                if let Some(c) = conns.get(current % conns.len().max(1)) {
                    let _ = wire::send(c.as_raw_fd(), &words, fd);
                }
            }
        }
        // The broker handles what is ready; replies must be frames.
        for _ in 0..2 {
            let _ = broker.turn(&mut events, 0);
        }
        for c in &conns {
            while let Ok(Some(reply)) = wire::recv(c.as_raw_fd(), libc::MSG_DONTWAIT) {
                assert!(!reply.words.is_empty(), "an empty reply");
                if let Some(fd) = reply.fd {
                    if received.len() < 16 {
                        received.push(fd);
                    }
                }
            }
        }
    }
    drop(conns);
    let _ = broker.turn(&mut events, 0);
});

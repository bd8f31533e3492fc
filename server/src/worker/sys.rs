//! The listening-socket calls mio and std do not wrap, for the accept path: registering
//! a listener with `EPOLLEXCLUSIVE`, and `TCP_NODELAY` set once on the listener (Linux
//! copies it into every accepted socket). Elsewhere the plain mio/std calls are used.

#![allow(unsafe_code)]

use std::io;

use mio::net::TcpListener;
use mio::{Interest, Registry, Token};

/// Registers a listener clone for readable events.
///
/// Every worker polls a clone of the same listening socket. Registered plainly, each
/// new connection wakes every worker that sleeps in `epoll_wait`; one accepts, the others
/// find nothing and go back to sleep: a context switch in and out per worker per connect.
/// With `EPOLLEXCLUSIVE` the kernel wakes one sleeping worker per connection (a busy
/// worker still sees it on its next poll, so nothing is lost). Edge triggered, like mio's
/// own registrations. Kernels without `EPOLLEXCLUSIVE` (before 4.5) get the plain
/// registration.
pub(super) fn register_listener(
    registry: &Registry,
    l: &mut TcpListener,
    token: Token,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let events = libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE;
        // mio reads the token back from `u64` (as it writes it in its own registrations).
        let mut ev = libc::epoll_event { events: events as u32, u64: token.0 as u64 };
        // SAFETY: both descriptors are open for the call (owned by `poll` and `l`, which
        // are borrowed), and `ev` is a valid `epoll_event` the kernel only reads.
        let rc = unsafe {
            libc::epoll_ctl(registry.as_raw_fd(), libc::EPOLL_CTL_ADD, l.as_raw_fd(), &mut ev)
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    registry.register(l, token, Interest::READABLE)
}

/// Removes a listener registered by [`register_listener`] (either way) from `poll`.
pub(super) fn deregister_listener(registry: &Registry, l: &mut TcpListener) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are open for the call; `EPOLL_CTL_DEL` ignores the
        // event pointer, which is null.
        let rc = unsafe {
            libc::epoll_ctl(
                registry.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                l.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            return;
        }
    }
    let _ = registry.deregister(l);
}

/// Sets `TCP_NODELAY` on a listening socket for the sockets it will accept: Linux copies
/// the listener's options into each, which spares a `setsockopt` per connection. True if
/// accepted sockets will have it; false (other systems, or the call failed) means each
/// accepted socket needs its own `set_nodelay`.
pub(super) fn set_listener_nodelay(l: &TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: the descriptor is open for the call (`l` is borrowed); the option value
        // points at a live `c_int` whose size is passed with it and which the kernel only
        // reads.
        let rc = unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = l;
        false
    }
}

/// Returns the allocator's free memory to the OS. glibc keeps the pages a burst
/// freed (above all in a thread's arena whose blocks another thread freed: messages
/// built by one worker and dropped by another) and the process's RSS stays at its
/// peak; `malloc_trim` gives back what is free. Elsewhere a no-op.
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer and only walks the allocator's own free
    // lists, under its arena locks, like any `malloc`/`free` call.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mio::{Events, Poll, Token};

    use super::*;

    fn listener() -> TcpListener {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std.set_nonblocking(true).unwrap();
        TcpListener::from_std(std)
    }

    /// Accepts the one pending connection, waiting for it if need be.
    fn accept(l: &TcpListener) -> mio::net::TcpStream {
        for _ in 0..200 {
            if let Ok((s, _)) = l.accept() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no connection to accept");
    }

    #[test]
    fn a_listener_registered_by_hand_reports_its_token_to_mio() {
        let mut poll = Poll::new().unwrap();
        let mut l = listener();
        register_listener(poll.registry(), &mut l, Token(7)).unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(5))).unwrap();
        let tokens: Vec<Token> = events.iter().map(|e| e.token()).collect();
        assert_eq!(tokens, [Token(7)]);
        assert!(events.iter().all(|e| e.is_readable()));
        // Deregistered: the next connection raises no event.
        deregister_listener(poll.registry(), &mut l);
        let _second = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
        assert!(events.is_empty());
    }

    #[test]
    fn accepted_sockets_have_nodelay_one_way_or_the_other() {
        let l = listener();
        let inherited = set_listener_nodelay(&l);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let stream = accept(&l);
        // What `Worker::accept` does with the answer.
        if !inherited {
            stream.set_nodelay(true).unwrap();
        }
        assert!(stream.nodelay().unwrap(), "Nagle left on for an accepted socket");
    }
}

//! Which connections the server keeps: at most [`MAX_CONNECTIONS`] in all and
//! [`MAX_PER_ADDRESS`] from one client address, so one address cannot take every slot.
//!
//! At an address's limit, a connection of that address that has never been answered (opened
//! and left idle, or refused for its credentials) is closed to make room, the longest idle
//! first; connections that have been served (a scraper's keep-alive connection) are kept, and
//! the newcomer is refused. At the total limit, any idle connection may be closed, the never
//! answered first, then the longest idle.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::sync::Notify;

/// Connections served at once (a scraper needs one or two).
pub const MAX_CONNECTIONS: usize = 64;
/// Connections from one client address.
pub const MAX_PER_ADDRESS: usize = 16;

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every connection from this address is busy.
    PerAddress,
    /// Every connection is busy.
    Total,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::PerAddress => "per_address",
            Refused::Total => "total",
        }
    }
}

#[derive(Debug)]
struct Conn {
    addr: IpAddr,
    /// A request is being handled.
    busy: bool,
    /// A request on it has been answered (not with 401).
    served: bool,
    /// Since when it has not been busy.
    idle_since: Instant,
    close: Arc<Notify>,
}

#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    conns: HashMap<u64, Conn>,
}

/// An admitted connection: its place is freed when the ticket drops.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    admission: Arc<Admission>,
    close: Arc<Notify>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Admission> {
        Arc::new(Admission { max_total, max_per_address, state: Mutex::new(State::default()) })
    }

    /// Admit a connection from `addr`, closing an idle one if a limit is reached. Returns the
    /// ticket and whether a connection was evicted for it.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<(Ticket, bool), Refused> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let from_addr = st.conns.values().filter(|c| c.addr == addr).count();
        let mut evicted = false;
        let limit = if from_addr >= self.max_per_address {
            Some((Refused::PerAddress, Some(addr)))
        } else if st.conns.len() >= self.max_total {
            Some((Refused::Total, None))
        } else {
            None
        };
        if let Some((why, only)) = limit {
            // At an address's limit only its never-served connections may go; at the total
            // limit any idle one, the never-served first.
            let victim = st
                .conns
                .iter()
                .filter(|(_, c)| !c.busy && only.is_none_or(|a| c.addr == a && !c.served))
                .min_by_key(|(_, c)| (c.served, c.idle_since))
                .map(|(id, _)| *id);
            let Some(id) = victim else { return Err(why) };
            if let Some(c) = st.conns.remove(&id) {
                // notify_one keeps the wake-up for a task not yet waiting on it.
                c.close.notify_one();
            }
            evicted = true;
        }
        let id = st.next;
        st.next += 1;
        let close = Arc::new(Notify::new());
        st.conns
            .insert(id, Conn { addr, busy: false, served: false, idle_since: Instant::now(), close: close.clone() });
        Ok((Ticket { id, admission: self.clone(), close }, evicted))
    }

    /// Connections held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.state.lock().map(|s| s.conns.len()).unwrap_or(0)
    }
}

impl Ticket {
    /// A request starts.
    pub fn busy(&self) {
        self.with(|c| c.busy = true);
    }

    /// A request has been answered: `served` unless it was refused for its credentials.
    pub fn answered(&self, served: bool) {
        self.with(|c| {
            c.busy = false;
            c.served |= served;
            c.idle_since = Instant::now();
        });
    }

    fn with(&self, f: impl FnOnce(&mut Conn)) {
        let mut st = self.admission.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = st.conns.get_mut(&self.id) {
            f(c);
        }
    }

    /// Resolves when the connection has been chosen to make room.
    pub async fn evicted(&self) {
        self.close.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.admission.state.lock().unwrap_or_else(|p| p.into_inner());
        st.conns.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn at_an_address_limit_only_its_never_served_connections_make_room() {
        let a = Admission::new(8, 2);
        let (served, _) = a.admit(ip(2)).expect("first");
        served.busy();
        served.answered(true);
        let (unused, _) = a.admit(ip(2)).expect("second");
        // The never-served one goes for a newcomer of its address; then only served or busy
        // ones are left, and the next newcomer is refused.
        let (fresh, evicted) = a.admit(ip(2)).expect("evicts the unused one");
        assert!(evicted);
        fresh.busy();
        assert_eq!(a.admit(ip(2)).unwrap_err(), Refused::PerAddress);
        // Refused for its credentials is not served.
        fresh.answered(false);
        assert!(a.admit(ip(2)).expect("evicts the refused one").1);
        // Another address is not affected.
        assert!(!a.admit(ip(1)).expect("another address").1);
        drop((served, unused));
    }

    #[test]
    fn at_the_total_limit_the_never_served_then_the_longest_idle_go_and_busy_ones_stay() {
        let a = Admission::new(3, 3);
        let (old, _) = a.admit(ip(2)).expect("a");
        old.busy();
        old.answered(true);
        let (busy, _) = a.admit(ip(3)).expect("b");
        busy.busy();
        let (unused, _) = a.admit(ip(4)).expect("c");
        // The never-served one goes first although `old` has been idle longer.
        let (new, evicted) = a.admit(ip(5)).expect("room made");
        assert!(evicted);
        new.busy();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), unused.evicted()).await.expect("unused evicted")
        });
        assert_eq!(a.held(), 3);
        // Then the served idle one; with every one busy, a newcomer is refused.
        let (newer, evicted) = a.admit(ip(6)).expect("old makes room");
        assert!(evicted);
        newer.busy();
        assert_eq!(a.admit(ip(7)).unwrap_err(), Refused::Total);
        drop((old, busy, new, newer));
        assert_eq!(a.held(), 0);
    }
}

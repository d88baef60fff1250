//! The namespace's limits. They start from the machine's `/proc/sys/kernel` values (so that
//! a program sees the same limits under ipcshim as without it) and fall back to the Linux
//! defaults; `IPCSHIM_LIMITS`-style overrides are read by the broker at start.

use super::ids::MAX_INDEX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub shmmax: u64,
    pub shmall: u64,
    pub shmmni: u64,
    pub shmseg: u64,
    pub shmmin: u64,
    pub semmsl: u64,
    pub semmns: u64,
    pub semopm: u64,
    pub semmni: u64,
    pub semvmx: u64,
    pub semaem: u64,
    pub msgmax: u64,
    pub msgmnb: u64,
    pub msgmni: u64,
    /// The broker's own limit: connections one uid may hold at once (0: decided from the
    /// broker's descriptor limit at start, see `Broker::new`).
    pub conns_per_uid: u64,
}

impl Default for Limits {
    /// The Linux defaults (include/uapi/linux/{shm,sem,msg}.h).
    fn default() -> Self {
        Limits {
            shmmax: u64::MAX - (1 << 24),
            shmall: u64::MAX - (1 << 24),
            shmmni: 4096,
            shmseg: 4096,
            shmmin: 1,
            semmsl: 32000,
            semmns: 1_024_000_000,
            semopm: 500,
            semmni: 32000,
            semvmx: 32767,
            semaem: 16383,
            msgmax: 8192,
            msgmnb: 16384,
            msgmni: 32000,
            conns_per_uid: 0,
        }
    }
}

fn read_proc(name: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/sys/kernel/{name}")).ok()?;
    text.split_whitespace().map(|w| w.parse().ok()).collect()
}

impl Limits {
    /// The machine's limits where /proc tells them, the defaults elsewhere. The per-family
    /// object counts are capped at IPCMNI, as the kernel caps them.
    pub fn from_machine() -> Limits {
        let mut l = Limits::default();
        let one = |name: &str, field: &mut u64| {
            if let Some(v) = read_proc(name).and_then(|v| v.first().copied()) {
                *field = v;
            }
        };
        one("shmmax", &mut l.shmmax);
        one("shmall", &mut l.shmall);
        one("shmmni", &mut l.shmmni);
        one("msgmax", &mut l.msgmax);
        one("msgmnb", &mut l.msgmnb);
        one("msgmni", &mut l.msgmni);
        if let Some(v) = read_proc("sem") {
            if v.len() == 4 {
                (l.semmsl, l.semmns, l.semopm, l.semmni) = (v[0], v[1], v[2], v[3]);
            }
        }
        l.shmseg = l.shmmni;
        l.apply_env(std::env::var("IPCSHIM_LIMITS").ok().as_deref());
        l.clamp();
        l
    }

    /// `IPCSHIM_LIMITS="msgmni=16,semmsl=250"` overrides single limits (for tests and for
    /// namespaces that want the kernel's old, small defaults).
    pub fn apply_env(&mut self, spec: Option<&str>) {
        for item in spec.unwrap_or("").split(',').filter(|s| !s.is_empty()) {
            let Some((name, value)) = item.split_once('=') else { continue };
            let Ok(value) = value.trim().parse::<u64>() else { continue };
            let field = match name.trim() {
                "shmmax" => &mut self.shmmax,
                "shmall" => &mut self.shmall,
                "shmmni" => &mut self.shmmni,
                "semmsl" => &mut self.semmsl,
                "semmns" => &mut self.semmns,
                "semopm" => &mut self.semopm,
                "semmni" => &mut self.semmni,
                "msgmax" => &mut self.msgmax,
                "msgmnb" => &mut self.msgmnb,
                "msgmni" => &mut self.msgmni,
                "conns_per_uid" => &mut self.conns_per_uid,
                _ => continue,
            };
            *field = value;
        }
    }

    fn clamp(&mut self) {
        for f in [&mut self.shmmni, &mut self.semmni, &mut self.msgmni] {
            *f = (*f).min(MAX_INDEX as u64);
        }
        self.shmseg = self.shmseg.min(self.shmmni);
    }

    /// The object-count limit of one family.
    pub fn mni(&self, family: super::Family) -> usize {
        match family {
            super::Family::Msg => self.msgmni as usize,
            super::Family::Sem => self.semmni as usize,
            super::Family::Shm => self.shmmni as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_caps() {
        let mut l = Limits::default();
        l.apply_env(Some("msgmni=16, semmsl=250,bogus=1,shmmni=x,shmmni=99999"));
        l.clamp();
        assert_eq!(l.msgmni, 16);
        assert_eq!(l.semmsl, 250);
        assert_eq!(l.shmmni, 32768);
    }
}

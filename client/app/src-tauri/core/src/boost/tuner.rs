//! Windows' boost, as decisions over a small [`System`] trait so they are tested on any OS
//! (the calls themselves are in `windows.rs`): raise the game's priority class to HIGH and
//! switch to the "High performance" power plan while it plays; afterwards put back what we
//! changed, and only that.
//!
//! - A game already at HIGH or REALTIME is left alone (and not lowered afterwards).
//! - An engage that fails half-way keeps the half that worked and still records it, so the
//!   release that always follows restores it: nothing is left changed by an error.
//! - On release, a setting the gamer changed meanwhile (another plan picked, the priority set by
//!   hand) is theirs: we restore only while ours is still in force.
//! - Release tries both restores even if the first fails, and reports the first error.

use std::io;

use super::{BoostError, Booster};

/// A process priority class, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// IDLE_PRIORITY_CLASS.
    Idle,
    /// BELOW_NORMAL_PRIORITY_CLASS.
    BelowNormal,
    /// NORMAL_PRIORITY_CLASS.
    Normal,
    /// ABOVE_NORMAL_PRIORITY_CLASS.
    AboveNormal,
    /// HIGH_PRIORITY_CLASS: what the boost sets.
    High,
    /// REALTIME_PRIORITY_CLASS.
    Realtime,
}

/// A power plan's GUID (`GUID::to_u128`).
pub type Plan = u128;

/// The "High performance" plan, GUID_MIN_POWER_SAVINGS (8c5e7fda-e8bf-4a96-9a85-a6e23a8c635c).
pub const HIGH_PERFORMANCE: Plan = 0x8c5e7fda_e8bf_4a96_9a85_a6e23a8c635c;

/// The OS calls the boost needs.
pub trait System: Send {
    /// The priority class of `pid`.
    fn priority(&self, pid: u32) -> io::Result<Priority>;
    /// Sets the priority class of `pid`.
    fn set_priority(&self, pid: u32, p: Priority) -> io::Result<()>;
    /// The active power plan.
    fn active_plan(&self) -> io::Result<Plan>;
    /// Activates `plan`.
    fn set_active_plan(&self, plan: Plan) -> io::Result<()>;
}

/// What engage changed, to put back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Changed {
    /// The game's priority before.
    priority: Option<Priority>,
    /// The plan before.
    plan: Option<Plan>,
}

/// Priority and power plan over a [`System`].
#[derive(Debug)]
pub struct Tuner<S> {
    sys: S,
    /// For the pid engaged last.
    changed: Option<(u32, Changed)>,
}

fn os(action: String) -> impl FnOnce(io::Error) -> BoostError {
    move |source| BoostError::Os { action, source }
}

impl<S: System> Tuner<S> {
    /// Nothing changed yet.
    pub fn new(sys: S) -> Self {
        Tuner { sys, changed: None }
    }

    /// The system underneath.
    pub fn system(&self) -> &S {
        &self.sys
    }

    fn raise(&self, pid: u32) -> Result<Option<Priority>, BoostError> {
        let before = self
            .sys
            .priority(pid)
            .map_err(os(format!("read the priority of process {pid}")))?;
        if before >= Priority::High {
            return Ok(None);
        }
        self.sys
            .set_priority(pid, Priority::High)
            .map_err(os(format!("raise the priority of process {pid}")))?;
        Ok(Some(before))
    }

    fn switch_plan(&self) -> Result<Option<Plan>, BoostError> {
        let before = self
            .sys
            .active_plan()
            .map_err(os("read the active power plan".into()))?;
        if before == HIGH_PERFORMANCE {
            return Ok(None);
        }
        self.sys
            .set_active_plan(HIGH_PERFORMANCE)
            .map_err(os("switch to the High performance power plan".into()))?;
        Ok(Some(before))
    }

    /// Raises `pid` and switches the plan; what worked is recorded even if the rest failed.
    pub fn engage_now(&mut self, pid: u32) -> Result<(), BoostError> {
        if let Some((old, _)) = self.changed {
            // One game at a time: put the previous one back first.
            let _ = self.release_now(old);
        }
        let mut changed = Changed::default();
        let priority = self.raise(pid).map(|p| changed.priority = p);
        let plan = self.switch_plan().map(|p| changed.plan = p);
        self.changed = Some((pid, changed));
        priority.and(plan)
    }

    /// Puts back what [`Tuner::engage_now`] changed for `pid`, where it is still ours.
    pub fn release_now(&mut self, pid: u32) -> Result<(), BoostError> {
        let Some((engaged, changed)) = self.changed else {
            return Ok(());
        };
        if engaged != pid {
            return Ok(());
        }
        self.changed = None;
        let priority = match changed.priority {
            // A game that exited has no priority to restore.
            Some(before) => match self.sys.priority(pid) {
                Ok(Priority::High) => self
                    .sys
                    .set_priority(pid, before)
                    .map_err(os(format!("restore the priority of process {pid}"))),
                Ok(_) | Err(_) => Ok(()),
            },
            None => Ok(()),
        };
        let plan = match changed.plan {
            Some(before) => match self.sys.active_plan() {
                Ok(HIGH_PERFORMANCE) => self
                    .sys
                    .set_active_plan(before)
                    .map_err(os("restore the power plan".into())),
                Ok(_) => Ok(()),
                Err(e) => Err(BoostError::Os {
                    action: "read the active power plan".into(),
                    source: e,
                }),
            },
            None => Ok(()),
        };
        priority.and(plan)
    }
}

impl<S: System> Booster for Tuner<S> {
    async fn engage(&mut self, pid: u32) -> Result<(), BoostError> {
        self.engage_now(pid)
    }

    async fn release(&mut self, pid: u32) -> Result<(), BoostError> {
        self.release_now(pid)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    const BALANCED: Plan = 0x381b4222_f694_41f0_9685_ff5bb260df2e;

    /// A pretend Windows: processes with priorities, one active plan, calls that can be made
    /// to fail, and a log of every change.
    #[derive(Debug)]
    struct Fake {
        procs: Mutex<HashMap<u32, Priority>>,
        plan: Mutex<Plan>,
        fail: Mutex<Vec<&'static str>>,
        log: Mutex<Vec<String>>,
    }

    impl Fake {
        fn new(procs: &[(u32, Priority)], plan: Plan) -> Self {
            Fake {
                procs: Mutex::new(procs.iter().copied().collect()),
                plan: Mutex::new(plan),
                fail: Mutex::new(vec![]),
                log: Mutex::new(vec![]),
            }
        }
        fn failing(self, call: &'static str) -> Self {
            self.fail.lock().unwrap().push(call);
            self
        }
        fn check(&self, call: &'static str) -> io::Result<()> {
            if self.fail.lock().unwrap().contains(&call) {
                return Err(io::Error::from_raw_os_error(5)); // access denied
            }
            Ok(())
        }
        fn prio(&self, pid: u32) -> Option<Priority> {
            self.procs.lock().unwrap().get(&pid).copied()
        }
        fn plan(&self) -> Plan {
            *self.plan.lock().unwrap()
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl System for &Fake {
        fn priority(&self, pid: u32) -> io::Result<Priority> {
            self.check("priority")?;
            self.prio(pid)
                .ok_or_else(|| io::Error::from_raw_os_error(87)) // no such process
        }
        fn set_priority(&self, pid: u32, p: Priority) -> io::Result<()> {
            self.check("set_priority")?;
            let mut procs = self.procs.lock().unwrap();
            let slot = procs
                .get_mut(&pid)
                .ok_or_else(|| io::Error::from_raw_os_error(87))?;
            *slot = p;
            self.log.lock().unwrap().push(format!("{pid} {p:?}"));
            Ok(())
        }
        fn active_plan(&self) -> io::Result<Plan> {
            self.check("active_plan")?;
            Ok(self.plan())
        }
        fn set_active_plan(&self, plan: Plan) -> io::Result<()> {
            self.check("set_active_plan")?;
            *self.plan.lock().unwrap() = plan;
            let name = if plan == HIGH_PERFORMANCE {
                "high"
            } else {
                "balanced"
            };
            self.log.lock().unwrap().push(format!("plan {name}"));
            Ok(())
        }
    }

    #[test]
    fn raises_then_restores_both() {
        let f = Fake::new(&[(7, Priority::Normal)], BALANCED);
        let mut t = Tuner::new(&f);
        t.engage_now(7).unwrap();
        assert_eq!(
            (f.prio(7), f.plan()),
            (Some(Priority::High), HIGH_PERFORMANCE)
        );
        t.release_now(7).unwrap();
        assert_eq!((f.prio(7), f.plan()), (Some(Priority::Normal), BALANCED));
        t.release_now(7).unwrap(); // twice: nothing more
        assert_eq!(
            f.log(),
            ["7 High", "plan high", "7 Normal", "plan balanced"]
        );
    }

    #[test]
    fn leaves_alone_what_is_already_there() {
        let f = Fake::new(&[(7, Priority::Realtime)], HIGH_PERFORMANCE);
        let mut t = Tuner::new(&f);
        t.engage_now(7).unwrap();
        t.release_now(7).unwrap();
        assert!(f.log().is_empty(), "{:?}", f.log());
        assert_eq!(
            (f.prio(7), f.plan()),
            (Some(Priority::Realtime), HIGH_PERFORMANCE)
        );
    }

    /// The plan can't be switched (e.g. a laptop without that plan, or policy): the priority
    /// stays raised for the session and is restored at the end; the error says what failed.
    #[test]
    fn a_failed_plan_switch_keeps_and_later_restores_the_priority() {
        let f = Fake::new(&[(7, Priority::BelowNormal)], BALANCED).failing("set_active_plan");
        let mut t = Tuner::new(&f);
        let e = t.engage_now(7).unwrap_err().to_string();
        assert!(e.contains("High performance power plan"), "{e}");
        assert_eq!(f.prio(7), Some(Priority::High));
        t.release_now(7).unwrap();
        assert_eq!(
            (f.prio(7), f.plan()),
            (Some(Priority::BelowNormal), BALANCED)
        );
    }

    /// Priority refused (an elevated game, anti-cheat): the plan is still switched, and
    /// restored.
    #[test]
    fn a_refused_priority_still_switches_and_restores_the_plan() {
        let f = Fake::new(&[(7, Priority::Normal)], BALANCED).failing("set_priority");
        let mut t = Tuner::new(&f);
        let e = t.engage_now(7).unwrap_err().to_string();
        assert!(e.contains("raise the priority of process 7"), "{e}");
        assert_eq!(f.plan(), HIGH_PERFORMANCE);
        t.release_now(7).unwrap();
        assert_eq!(f.plan(), BALANCED);
        assert_eq!(f.log(), ["plan high", "plan balanced"]);
    }

    /// What the gamer changed during the session is theirs; a game that exited is fine.
    #[test]
    fn does_not_undo_the_gamers_own_changes() {
        let f = Fake::new(&[(7, Priority::Normal)], BALANCED);
        let mut t = Tuner::new(&f);
        t.engage_now(7).unwrap();
        const SAVER: Plan = 0xa1841308_3541_4fab_bc81_f71556f20b4a;
        *f.plan.lock().unwrap() = SAVER;
        f.procs.lock().unwrap().remove(&7); // the game exited
        t.release_now(7).unwrap();
        assert_eq!(f.plan(), SAVER);
        assert_eq!(f.log(), ["7 High", "plan high"]);
    }

    /// The game restarted under a new pid: the old one is put back before the new one is
    /// raised; the plan is switched back and forth only as needed.
    #[test]
    fn a_new_game_pid_releases_the_old_one_first() {
        let f = Fake::new(
            &[(7, Priority::Normal), (8, Priority::AboveNormal)],
            BALANCED,
        );
        let mut t = Tuner::new(&f);
        t.engage_now(7).unwrap();
        t.engage_now(8).unwrap();
        t.release_now(7).unwrap(); // stale: not ours any more
        assert_eq!(f.prio(8), Some(Priority::High));
        t.release_now(8).unwrap();
        assert_eq!(
            f.log(),
            [
                "7 High",
                "plan high",
                "7 Normal",
                "plan balanced",
                "8 High",
                "plan high",
                "8 AboveNormal",
                "plan balanced"
            ]
        );
    }

    /// A release whose first restore fails still tries the second, and reports the first.
    #[test]
    fn release_tries_both_restores() {
        let f = Fake::new(&[(7, Priority::Normal)], BALANCED);
        let mut t = Tuner::new(&f);
        t.engage_now(7).unwrap();
        f.fail.lock().unwrap().push("set_priority");
        let e = t.release_now(7).unwrap_err().to_string();
        assert!(e.contains("restore the priority of process 7"), "{e}");
        assert_eq!(f.plan(), BALANCED);
    }
}

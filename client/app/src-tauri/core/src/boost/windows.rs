//! Windows: the [`System`] calls behind the tuner — `Get/SetPriorityClass` on the game's
//! process (opened with just the rights they need) and `PowerGetActiveScheme` /
//! `PowerSetActiveScheme` for the power plan. Compiled by CI's Windows cross-check.

// FFI: every call below is a plain Win32 call with owned, checked arguments.
#![allow(unsafe_code)]

use std::io;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, LocalFree};
use windows_sys::Win32::System::Power::{PowerGetActiveScheme, PowerSetActiveScheme};
use windows_sys::Win32::System::Threading::{
    ABOVE_NORMAL_PRIORITY_CLASS, BELOW_NORMAL_PRIORITY_CLASS, GetPriorityClass,
    HIGH_PRIORITY_CLASS, IDLE_PRIORITY_CLASS, NORMAL_PRIORITY_CLASS, OpenProcess,
    PROCESS_ACCESS_RIGHTS, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SET_INFORMATION,
    REALTIME_PRIORITY_CLASS, SetPriorityClass,
};
use windows_sys::core::GUID;

use super::tuner::{Plan, Priority, System};

/// The real Windows.
#[derive(Debug, Clone, Copy)]
pub struct WindowsSystem;

/// A process handle, closed on drop.
struct Process(HANDLE);

impl Process {
    fn open(pid: u32, access: PROCESS_ACCESS_RIGHTS) -> io::Result<Process> {
        // SAFETY: no pointers; a null handle is checked.
        let h = unsafe { OpenProcess(access, 0, pid) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Process(h))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: the handle came from OpenProcess and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

fn from_class(c: u32) -> io::Result<Priority> {
    Ok(match c {
        IDLE_PRIORITY_CLASS => Priority::Idle,
        BELOW_NORMAL_PRIORITY_CLASS => Priority::BelowNormal,
        NORMAL_PRIORITY_CLASS => Priority::Normal,
        ABOVE_NORMAL_PRIORITY_CLASS => Priority::AboveNormal,
        HIGH_PRIORITY_CLASS => Priority::High,
        REALTIME_PRIORITY_CLASS => Priority::Realtime,
        0 => return Err(io::Error::last_os_error()),
        other => {
            return Err(io::Error::other(format!(
                "unknown priority class {other:#x}"
            )));
        }
    })
}

fn to_class(p: Priority) -> u32 {
    match p {
        Priority::Idle => IDLE_PRIORITY_CLASS,
        Priority::BelowNormal => BELOW_NORMAL_PRIORITY_CLASS,
        Priority::Normal => NORMAL_PRIORITY_CLASS,
        Priority::AboveNormal => ABOVE_NORMAL_PRIORITY_CLASS,
        Priority::High => HIGH_PRIORITY_CLASS,
        Priority::Realtime => REALTIME_PRIORITY_CLASS,
    }
}

fn win32(code: u32) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code as i32))
    }
}

impl System for WindowsSystem {
    fn priority(&self, pid: u32) -> io::Result<Priority> {
        let p = Process::open(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
        // SAFETY: a live process handle with query rights.
        from_class(unsafe { GetPriorityClass(p.0) })
    }

    fn set_priority(&self, pid: u32, prio: Priority) -> io::Result<()> {
        let p = Process::open(pid, PROCESS_SET_INFORMATION)?;
        // SAFETY: a live process handle with set-information rights.
        if unsafe { SetPriorityClass(p.0, to_class(prio)) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn active_plan(&self) -> io::Result<Plan> {
        let mut guid: *mut GUID = std::ptr::null_mut();
        // SAFETY: the out pointer is valid; on success the GUID is ours to LocalFree.
        win32(unsafe { PowerGetActiveScheme(std::ptr::null_mut(), &mut guid) })?;
        if guid.is_null() {
            return Err(io::Error::other("PowerGetActiveScheme returned no plan"));
        }
        // SAFETY: non-null, allocated by the call above; freed once after the read.
        let g = unsafe { *guid };
        unsafe { LocalFree(guid.cast()) };
        Ok(((g.data1 as u128) << 96)
            | ((g.data2 as u128) << 80)
            | ((g.data3 as u128) << 64)
            | u64::from_be_bytes(g.data4) as u128)
    }

    fn set_active_plan(&self, plan: Plan) -> io::Result<()> {
        let g = GUID::from_u128(plan);
        // SAFETY: a pointer to a GUID on our stack, read during the call only.
        win32(unsafe { PowerSetActiveScheme(std::ptr::null_mut(), &g) })
    }
}

#!/usr/bin/python3
"""Asks the X11 window titled argv[1] to close, as a window manager's close button does
(a WM_DELETE_WINDOW client message). Used by measure-memory.sh (TRAY=1) under Xvfb, which has
no window manager. Needs Debian's python3-xlib."""
import sys

from Xlib import X, display, protocol


def find(window, name):
    try:
        if window.get_wm_name() == name:
            return window
    except Exception:
        pass
    for child in window.query_tree().children:
        hit = find(child, name)
        if hit:
            return hit
    return None


def main():
    d = display.Display()
    target = find(d.screen().root, sys.argv[1])
    if target is None:
        sys.exit(f"no window named {sys.argv[1]!r}")
    event = protocol.event.ClientMessage(
        window=target,
        client_type=d.intern_atom("WM_PROTOCOLS"),
        data=(32, [d.intern_atom("WM_DELETE_WINDOW"), X.CurrentTime, 0, 0, 0]),
    )
    target.send_event(event, event_mask=X.NoEventMask)
    d.flush()


main()

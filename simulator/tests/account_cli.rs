//! The account commands of the real `plg` binary against a real `plg-billing`: `plg status`
//! (plan and time left), `plg subscribe` (plans, the free trial, a DonatePay payment), and the
//! advice an error gets.

mod common;

use std::process::{Command, Output};

use common::{bin, plg_login, plg_login_with, start_billing_with};

fn plg(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(bin("plg"))
        .args(args)
        .env("PLG_CONFIG_DIR", config)
        // No browser here: `plg subscribe` prints the page instead.
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn status_subscribe_and_their_errors_speak_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut billing, url, _) = start_billing_with(
        dir.path(),
        9,
        "trial_on_signup = false\n[donatepay]\napi_url = \"http://127.0.0.1:9\"\napi_key = \"an-api-key-for-tests\"\n\
         webhook_secret = \"a-webhook-secret-of-32-characters\"\npage_url = \"https://donatepay.example/don/plg\"\npoll_interval_secs = 0\n",
    );
    let config = dir.path().join("plg-config");
    plg_login(&url, "account@example.com", &config);

    let out = plg(&config, &["status"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("logged in as account@example.com"), "{t}");
    assert!(
        t.contains("no active plan") && t.contains("plg subscribe trial"),
        "{t}"
    );

    // Connecting without a plan says what to run.
    let out = plg(&config, &["connect", "demo", "--plain"]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("plg subscribe trial"), "{t}");

    let out = plg(&config, &["subscribe"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in ["trial", "free", "monthly", "5.99 USD", "yearly"] {
        assert!(t.contains(want), "{want}: {t}");
    }

    let out = plg(&config, &["subscribe", "trial"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Seven days, give or take the second that passed.
    let week = |t: &str, prefix: &str| {
        t.contains(&format!("{prefix}7 days 0 h left"))
            || t.contains(&format!("{prefix}6 days 23 h left"))
    };
    assert!(week(&t, "trial started: "), "{t}");
    let t = text(&plg(&config, &["status"]));
    assert!(week(&t, "plan trial: "), "{t}");
    assert!(t.contains("no open session"), "{t}");

    // Once per account, and the error says what to do instead.
    let out = plg(&config, &["subscribe", "trial"]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(
        t.contains("once per account") && t.contains("plg subscribe"),
        "{t}"
    );

    let out = plg(&config, &["subscribe", "weekly"]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("no such plan"), "{t}");

    // A payment for a plan: its instructions and the page to pay on.
    let out = plg(&config, &["subscribe", "monthly"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("created for plan monthly"), "{t}");
    assert!(
        t.contains("Pay exactly 5.99 USD") && t.contains("PLG:"),
        "{t}"
    );
    assert!(
        t.contains("pay on: https://donatepay.example/don/plg"),
        "{t}"
    );

    let out = plg(&config, &["sessions"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("no sessions yet"), "{t}");
    let out = plg(&config, &["sessions", "--stop", "12345"]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("plg sessions"), "{t}");

    // Log out and in again: the billing URL is remembered, no --billing needed.
    assert!(plg(&config, &["logout"]).status.success());
    let out = plg_login_with(&["--email", "account@example.com"], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&plg(&config, &["status"])).contains(&format!("at {url}")));
    // A first login anywhere else must name its billing.
    let fresh = dir.path().join("fresh");
    let out = plg(&fresh, &["login", "--email", "x@example.com"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--billing URL"), "{}", text(&out));

    billing.signal("TERM");
    assert!(billing.wait_exit());
}

//! `wxpay bench` run as a process for a short while: the simulator and the server start as its
//! children, orders complete, and the JSON report carries its fields. Speed is not asserted.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "wxpay bench {args:?} failed: {stderr}\n{stdout}"
    );
    let last = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn buyers_complete_orders_and_the_report_has_its_fields() {
    let report = bench(&[
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--buyers",
        "2",
        "--json",
    ]);
    assert_eq!(report["api"], "v3");
    assert_eq!(report["database"], "sqlite");
    assert!(report["orders"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    for field in [
        "orders_per_sec",
        "notifications_per_sec",
        "rsa_bound_orders_per_sec",
        "ratio",
        "p50_ms",
        "p99_ms",
        "peak_rss_bytes",
        "startup_ms",
        "cpu_secs_per_order_server",
        "cpu_secs_per_order_simulator",
    ] {
        assert!(report[field].as_f64().unwrap() > 0.0, "{field}: {report}");
    }
    // Counted from the code: the server signs the prepay and the paySign, the simulator its
    // answer and the notification.
    assert_eq!(report["server_signatures_per_order"], 2);
    assert_eq!(report["simulator_signatures_per_order"], 2);
    for endpoint in [
        "login",
        "create_order",
        "get_order",
        "sim_pay",
        "paid_visible",
    ] {
        assert!(
            report["endpoints"][endpoint]["count"].as_u64().unwrap() > 0,
            "{endpoint}: {report}"
        );
    }
}

#[test]
fn api_v2_has_no_rsa_bound() {
    let report = bench(&[
        "--api",
        "v2",
        "--duration",
        "1s",
        "--warmup",
        "500ms",
        "--buyers",
        "2",
        "--json",
    ]);
    assert_eq!(report["api"], "v2");
    assert!(report["orders"].as_u64().unwrap() > 0, "{report}");
    assert!(report["rsa_bound_orders_per_sec"].is_null());
    assert!(report["ratio"].is_null());
}

#[test]
fn a_notification_flood_is_applied_exactly_once() {
    let report = bench(&[
        "notifications",
        "--duration",
        "1s",
        "--orders",
        "300",
        "--duplicates",
        "0.5",
        "--concurrency",
        "8",
        "--json",
    ]);
    assert_eq!(report["benchmark"], "notifications");
    let unique = report["unique_notifications"].as_u64().unwrap();
    assert!(unique > 0, "{report}");
    assert!(report["duplicates_sent"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["refused"], 0, "{report}");
    assert_eq!(report["paid_orders"], unique, "{report}");
    assert_eq!(report["exactly_once"], true, "{report}");
    assert!(report["notifications_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["p99_ms"].as_f64().unwrap() > 0.0);
}

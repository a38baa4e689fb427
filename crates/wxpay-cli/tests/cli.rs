//! The `wxpay` binary against the protocol reference's test vectors (section D), run as a process.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use wxpay::RsaPrivateKey;

const D5_KEY_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../wxpay/tests/data/d5_key.pem"
);

const D1_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const D1_MD5: &str = "9A0A8659F005D6984697E2CA0A9CF3B7";
const D1_HMAC: &str = "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6";

const D6_BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
const D6_SIGNATURE: &str = "PlOfBuSVimtYtJ/TedcFLvX4IRwi1BsppHl8MdvhANpP59aXgVybW/uwR4zOpYKEc6vawOvTcEPNVSn+Oy0RK7HASLXMHJHVRhWpPgIoB1AwBHj4nGyW1bXaSqZyTn4MXBbIbUKUqty5vZnvetRyYEGYqSMSI4iWVs8sFJJdQbsw0sm/YizXDkrUNpTGyfks4iCWocR8SFRxGYyJG9jkJNoG48VbA2vSCdmAxj8rkLnVucoDGh8RB5vzk5lSZGqJHKoMgdZ40ZIUXNJZppUWhqR8bZ899upaL24gRTXZqymyi5xQaJo9msrewQQxjmpUjC6qG6m3cMeGeRJt97xeYg==";
const D6_NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";

const D7_BODY: &str = r#"{"prepay_id":"wx201410272009395522657a690389285100"}"#;
const D7_SIGNATURE: &str = "Fx7NKfc9uAogSej5EJ6OvQ5k5ZbRWj/aY9Lbm+WN4InohigGVx2szDJhT8JQ8ctvQb1+v9OXkOuHxSuXOEBWn0iKOwH4tAx/BZi0TJWMP2ShDR7BUbu8mvm6+vsWx6oortoBSgKiQtrxh9LDim+BOun8ROSX4Wiumv7wEcfKUOyllbHfZxK45NH/LKBdxSJDZFBm3Wtq1I0pvpnlTCwmnyKF9n2kDJgjQbw51uN5XpNXPX2owmpkfVp79I4rMdkNKZuphUmYG5wyCJBAF8sbwcTCvjQQblTXmCmUbHzYj+qXRg1sthbMGqbpK5z1n3tFLjiIXfQJR+PmdqjBsPT1jA==";
const D7_SIGNATURE_204: &str = "bNAqvNkGbCLVu6KSXS974+kowtExJqx2mdIIrPgLT7QaHBx6w0Kh6xE8uyfdaI1VpWXZPbxtnOIVXF4k5rHQgxrg7u6HRniT92zQxwfWxDRqKvwWnM9f4HzSznHL6DLEseQCyR1KOUUVp7c+zSIXUGU451l28kJFxxQ1evC1DqbxXjzfpsbJrMxKVgZfsTE0CFg498itZF2+d4yyJ9s1ZFYOvUh6YIvJq9ry8Hw3d+ybXF5dk9YAQSB7UE83Jeups2uwipj6OR/z2u+opdFOjvbWyWW8HFrmkzvfLQX2Hl45+sn9N3pmdV6caFuJqZXp1TaoYNOPH8B/lGshNN/YYQ==";
const D7_TIMESTAMP: &str = "1554209980";
const D7_NONCE: &str = "c5ac7061fccab6bf3e254dcf98995b8c";

const D8_SIGNATURE: &str = "TqVF9laH9pV8XhGIjctW4RxmwTaUQ3+P6OwJdgaWdg3nnDTVWmBMn/0+1HhshL/yvD7qM9xJtEmGgLyBTMlcD6RopG1bicanrjCC1pRlezK7Tea895ucmH033fENGrmSjyd528HfXpu30cj6ELhyKbqxPCt0CpYJHQdDNzWs+mqvS3ZZsTMu84ghjvjERgSkW+IorLRERZpyq1xVBJ7P9X2ZZMpJEABF4t8lnyd1pMu/D81LmGTsZA3WUBXmYK+BPrFdKD5QnHbuEbFm7NGLyr70wWKbzKOVmzWFVENWu30sJRTn65U+NQ4ZfHno4eEMEEs7qXZMPCiasoBXrYPuzQ==";

const D10_KEY: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
const D10_PLAIN: &str = r#"{"out_trade_no":"1217752501201407033233368018","trade_state":"SUCCESS","amount":{"total":100}}"#;
const D10_CIPHERTEXT: &str = "uQVbjqw1sVDp14z//z3fVn1MwLncbdHaJ0qD+wjRqOcpqQWbIs+e1fRAiXMr4ZqsluYGdTttU0u3zC6B2xXMV98xhVOg6UP/NMbRhTrfqAiiLcnIuANoCN3sxicDA2IwHoMbLAjceTh/TYRL7AU=";

/// A directory of its own per test, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("wxpay-cli-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn wxpay(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading its input: the pipe is then
    // closed under the write, which is not the test's failure.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().expect("exited normally"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn d5_public_key_pem() -> String {
    let pem = std::fs::read_to_string(D5_KEY_PATH).unwrap();
    RsaPrivateKey::from_pem(&pem).unwrap().public_key().to_pem()
}

// ---------------------------------------------------------------------------------------------
// sign v2

const D1_JSON: &str = r#"{"appid":"wxd930ea5d5a258f4f","mch_id":"10000100","device_info":1000,"body":"test","nonce_str":"ibuaiVcKdpRxkhJA"}"#;
const D1_XML: &str = "<xml><appid><![CDATA[wxd930ea5d5a258f4f]]></appid><mch_id>10000100</mch_id>\
<device_info>1000</device_info><body><![CDATA[test]]></body><nonce_str>ibuaiVcKdpRxkhJA</nonce_str>\
<sign>9A0A8659F005D6984697E2CA0A9CF3B7</sign></xml>";

#[test]
fn d1_sign_v2_from_json_md5_and_hmac() {
    let md5 = wxpay(&["sign", "v2", "--key", D1_KEY], D1_JSON);
    assert_eq!(
        (md5.code, md5.stdout.as_str(), md5.stderr.as_str()),
        (0, "9A0A8659F005D6984697E2CA0A9CF3B7\n", "")
    );
    let hmac = wxpay(&["sign", "v2", "--key", D1_KEY, "--hmac"], D1_JSON);
    assert_eq!((hmac.code, hmac.stdout.trim()), (0, D1_HMAC));
}

#[test]
fn d1_sign_v2_from_xml_ignores_the_sign_field() {
    let md5 = wxpay(&["sign", "v2", "--key", D1_KEY], D1_XML);
    assert_eq!((md5.code, md5.stdout.trim()), (0, D1_MD5), "{}", md5.stderr);
    let hmac = wxpay(&["sign", "v2", "--key", D1_KEY, "--hmac"], D1_XML);
    assert_eq!(
        (hmac.code, hmac.stdout.trim()),
        (0, D1_HMAC),
        "{}",
        hmac.stderr
    );
}

#[test]
fn sign_v2_verbose_shows_the_string_to_sign_without_the_key() {
    let run = wxpay(&["sign", "v2", "--key", D1_KEY, "--verbose"], D1_XML);
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout.trim(), D1_MD5);
    assert!(
        run.stderr.contains(
            "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA&key=<key>\n"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("matches the computed sign"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(D1_KEY) && !run.stdout.contains(D1_KEY));
}

#[test]
fn sign_v2_warns_when_the_declared_sign_type_differs() {
    let input = r#"{"appid":"wxd930ea5d5a258f4f","sign_type":"HMAC-SHA256"}"#;
    let run = wxpay(&["sign", "v2", "--key", D1_KEY], input);
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout.trim().len(), 32);
    assert!(run.stderr.contains("pass --hmac"), "{}", run.stderr);
    let run = wxpay(&["sign", "v2", "--key", D1_KEY, "--hmac"], input);
    assert_eq!(
        (run.code, run.stdout.trim().len(), run.stderr.as_str()),
        (0, 64, "")
    );
}

#[test]
fn sign_v2_refuses_doctype_nested_json_and_garbage_with_exit_2() {
    let xxe = r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><a>&x;</a></xml>"#;
    let run = wxpay(&["sign", "v2", "--key", D1_KEY], xxe);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("DOCTYPE"), "{}", run.stderr);
    assert_eq!(run.stdout, "");

    let run = wxpay(
        &["sign", "v2", "--key", D1_KEY],
        r#"{"appid":"x","detail":{"goods":[]}}"#,
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("\"detail\" is nested"),
        "{}",
        run.stderr
    );

    for bad in ["", "appid=x", "[1,2]", r#"{"a":null}"#] {
        let run = wxpay(&["sign", "v2", "--key", D1_KEY], bad);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// pay-sign

#[test]
fn d2_pay_sign_v2_md5_and_hmac() {
    let args = |hmac: bool| {
        let mut a = vec![
            "pay-sign",
            "v2",
            "--appid",
            "wxd678efh567hg6787",
            "--key",
            "qazwsxedcrfvtgbyhnujmikolp111111",
            "--prepay-id",
            "wx2017033010242291fcfe0db70013231072",
            "--timestamp",
            "1490840662",
            "--nonce",
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        ];
        if hmac {
            a.push("--hmac");
        }
        a
    };
    let run = wxpay(&args(false), "");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "appId": "wxd678efh567hg6787",
            "timeStamp": "1490840662",
            "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
            "package": "prepay_id=wx2017033010242291fcfe0db70013231072",
            "signType": "MD5",
            "paySign": "22D9B4E54AB1950F51E0649E8810ACD6",
        })
    );
    assert!(
        run.stdout.contains("\n  \"paySign\""),
        "pretty-printed: {}",
        run.stdout
    );

    let run = wxpay(&args(true), "");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["signType"], "HMAC-SHA256");
    assert_eq!(
        json["paySign"],
        "FB9D1EFB5C509131BBFF729F88A99CA2DE9B724D06D3B3262832A53083862BC0"
    );
}

#[test]
fn d8_pay_sign_v3() {
    let run = wxpay(
        &[
            "pay-sign",
            "v3",
            "--appid",
            "wx8888888888888888",
            "--private-key",
            D5_KEY_PATH,
            "--prepay-id",
            "wx201410272009395522657a690389285100",
            "--timestamp",
            "1414561699",
            "--nonce",
            "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        ],
        "",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["appId"], "wx8888888888888888");
    assert_eq!(json["timeStamp"], "1414561699");
    assert_eq!(
        json["package"],
        "prepay_id=wx201410272009395522657a690389285100"
    );
    assert_eq!(json["signType"], "RSA");
    assert_eq!(json["paySign"], D8_SIGNATURE);
}

#[test]
fn pay_sign_defaults_to_now_and_a_fresh_nonce() {
    let args = [
        "pay-sign",
        "v2",
        "--appid",
        "wxa",
        "--key",
        D1_KEY,
        "--prepay-id",
        "wx1",
    ];
    let first: serde_json::Value = serde_json::from_str(&wxpay(&args, "").stdout).unwrap();
    let second: serde_json::Value = serde_json::from_str(&wxpay(&args, "").stdout).unwrap();
    let nonce = first["nonceStr"].as_str().unwrap();
    assert_eq!(nonce.len(), 32);
    assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_ne!(first["nonceStr"], second["nonceStr"]);
    let ts: i64 = first["timeStamp"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() < 60, "{ts} vs {now}");
}

#[test]
fn pay_sign_refuses_a_package_as_prepay_id_and_a_long_nonce() {
    let run = wxpay(
        &[
            "pay-sign",
            "v2",
            "--appid",
            "wxa",
            "--key",
            D1_KEY,
            "--prepay-id",
            "prepay_id=wx1",
        ],
        "",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("prepay_id="), "{}", run.stderr);
    let nonce = "N".repeat(33);
    let run = wxpay(
        &[
            "pay-sign",
            "v2",
            "--appid",
            "wxa",
            "--key",
            D1_KEY,
            "--prepay-id",
            "wx1",
            "--nonce",
            &nonce,
        ],
        "",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--nonce"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// sign v3

#[test]
fn d6_sign_v3_post_with_body_file() {
    let dir = Scratch::new("d6");
    let body = dir.file("body.json", D6_BODY);
    let run = wxpay(
        &[
            "sign",
            "v3",
            "--mchid",
            "1230000109",
            "--serial",
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
            "--private-key",
            D5_KEY_PATH,
            "--method",
            "POST",
            "--url",
            "/v3/pay/transactions/jsapi",
            "--body-file",
            p(&body),
            "--timestamp",
            "1554208460",
            "--nonce",
            D6_NONCE,
        ],
        "",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1230000109\",nonce_str=\"{D6_NONCE}\",timestamp=\"1554208460\",serial_no=\"5157F09EFDC096DE15EBE81A47057A7232F1B8E1\",signature=\"{D6_SIGNATURE}\"\n"
        )
    );
}

#[test]
fn d6_sign_v3_with_a_pkcs1_key_file_gives_the_same_signature() {
    let dir = Scratch::new("pkcs1");
    let key = RsaPrivateKey::from_pem(&std::fs::read_to_string(D5_KEY_PATH).unwrap()).unwrap();
    let pkcs1 = dir.file("key1.pem", pkcs1_pem(key.pkcs8_der()));
    assert!(
        std::fs::read_to_string(&pkcs1)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let body = dir.file("body.json", D6_BODY);
    let run = wxpay(
        &[
            "sign",
            "v3",
            "--mchid",
            "1230000109",
            "--serial",
            "ABC",
            "--private-key",
            p(&pkcs1),
            "--method",
            "post",
            "--url",
            "/v3/pay/transactions/jsapi",
            "--body-file",
            p(&body),
            "--timestamp",
            "1554208460",
            "--nonce",
            D6_NONCE,
        ],
        "",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("signature=\"{D6_SIGNATURE}\"")),
        "{}",
        run.stdout
    );
}

#[test]
fn sign_v3_refuses_full_urls_and_bad_keys_without_printing_them() {
    let dir = Scratch::new("badkey");
    let run = wxpay(
        &[
            "sign",
            "v3",
            "--mchid",
            "1",
            "--serial",
            "A",
            "--private-key",
            D5_KEY_PATH,
            "--method",
            "GET",
            "--url",
            "https://api.mch.weixin.qq.com/v3/certificates",
        ],
        "",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not a full URL"), "{}", run.stderr);

    // A public key where the private key belongs: refused, and no key material is echoed.
    let public = dir.file("pub.pem", d5_public_key_pem());
    let run = wxpay(
        &[
            "sign",
            "v3",
            "--mchid",
            "1",
            "--serial",
            "A",
            "--private-key",
            p(&public),
            "--method",
            "GET",
            "--url",
            "/v3/certificates",
        ],
        "",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("PUBLIC KEY"), "{}", run.stderr);
    let pem_body_line = d5_public_key_pem().lines().nth(1).unwrap().to_owned();
    assert!(!run.stderr.contains(&pem_body_line));
}

// ---------------------------------------------------------------------------------------------
// verify v3

fn verify(key_option: &str, key_file: &Path, signature: &str, body: Option<&Path>) -> Run {
    let mut args = vec![
        "verify",
        "v3",
        key_option,
        p(key_file),
        "--timestamp",
        D7_TIMESTAMP,
        "--nonce",
        D7_NONCE,
        "--signature",
        signature,
    ];
    if let Some(body) = body {
        args.extend(["--body-file", p(body)]);
    }
    wxpay(&args, "")
}

#[test]
fn d7_verify_v3_with_the_public_key() {
    let dir = Scratch::new("d7");
    let public = dir.file("pub.pem", d5_public_key_pem());
    let body = dir.file("body.json", D7_BODY);

    let run = verify("--public-key", &public, D7_SIGNATURE, Some(&body));
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "valid\n", "")
    );

    // The 204 case: no body file, empty body.
    let run = verify("--public-key", &public, D7_SIGNATURE_204, None);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "valid\n"),
        "{}",
        run.stderr
    );

    // Same key, another message (a trailing newline added by an editor): a mismatch, not a wrong key.
    let tampered = dir.file("tampered.json", format!("{D7_BODY}\n"));
    let run = verify("--public-key", &public, D7_SIGNATURE, Some(&tampered));
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with("invalid: signature mismatch"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1);
}

#[test]
fn d7_verify_v3_distinguishes_probe_base64_and_wrong_key() {
    let dir = Scratch::new("d7-invalid");
    let public = dir.file("pub.pem", d5_public_key_pem());
    let body = dir.file("body.json", D7_BODY);

    let probe = format!("WECHATPAY/SIGNTEST/{D7_SIGNATURE}");
    let run = verify("--public-key", &public, &probe, Some(&body));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("probe"), "{}", run.stderr);

    let run = verify("--public-key", &public, "not*base64", Some(&body));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not valid base64"), "{}", run.stderr);

    let run = verify("--public-key", &public, &D7_SIGNATURE[..40], Some(&body));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with("invalid: wrong length: the signature is 30 bytes"),
        "{}",
        run.stderr
    );

    let other = RsaPrivateKey::generate().unwrap();
    let other_public = dir.file("other.pem", other.public_key().to_pem());
    let run = verify("--public-key", &other_public, D7_SIGNATURE, Some(&body));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with("invalid: wrong key"),
        "{}",
        run.stderr
    );
}

#[test]
fn verify_v3_with_an_x509_certificate() {
    let dir = Scratch::new("cert");
    let key = RsaPrivateKey::generate().unwrap();
    let cert_pem = self_signed_certificate(&key);
    let cert = dir.file("cert.pem", &cert_pem);
    let body = dir.file("body.json", D7_BODY);
    let message = format!("{D7_TIMESTAMP}\n{D7_NONCE}\n{D7_BODY}\n");
    let signature = key.sign_sha256_base64(message.as_bytes()).unwrap();

    let run = verify("--certificate", &cert, &signature, Some(&body));
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "valid\n"),
        "{}",
        run.stderr
    );

    let run = verify("--certificate", &cert, D7_SIGNATURE, Some(&body));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("wrong key") && run.stderr.contains("certificate "),
        "{}",
        run.stderr
    );

    // A public key passed as a certificate is an input error with a hint.
    let public = dir.file("pub.pem", key.public_key().to_pem());
    let run = verify("--certificate", &public, &signature, Some(&body));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--public-key"), "{}", run.stderr);
}

#[test]
fn verify_v3_needs_exactly_one_key_source() {
    let run = wxpay(
        &[
            "verify",
            "v3",
            "--timestamp",
            "1",
            "--nonce",
            "n",
            "--signature",
            "AA==",
        ],
        "",
    );
    assert_eq!(run.code, 2);
    let run = wxpay(
        &[
            "verify",
            "v3",
            "--public-key",
            "a",
            "--certificate",
            "b",
            "--timestamp",
            "1",
            "--nonce",
            "n",
            "--signature",
            "AA==",
        ],
        "",
    );
    assert_eq!(run.code, 2);
}

// ---------------------------------------------------------------------------------------------
// decrypt v3

#[test]
fn d10_decrypt_v3() {
    let run = wxpay(
        &[
            "decrypt",
            "v3",
            "--apiv3-key",
            D10_KEY,
            "--nonce",
            "fdasflkja484",
            "--associated-data",
            "transaction",
            "--ciphertext",
            D10_CIPHERTEXT,
        ],
        "",
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, format!("{D10_PLAIN}\n").as_str()),
        "{}",
        run.stderr
    );

    let run = wxpay(
        &[
            "decrypt",
            "v3",
            "--apiv3-key",
            D10_KEY,
            "--nonce",
            "abcdefghijkl",
            "--associated-data",
            "certificate",
            "--ciphertext",
            "1+/XN+GNqBXhhxW5ujdyILBgfPQ5O793iKPB",
        ],
        "",
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "Hello World\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn d10_decrypt_v3_with_empty_associated_data() {
    let key = wxpay::v3::aead::ApiV3Key::new(D10_KEY).unwrap();
    let ciphertext = key
        .encrypt("fdasflkja484", "", D10_PLAIN.as_bytes())
        .unwrap();
    assert!(
        ciphertext.ends_with("xicDA3oo4wGUdcAV/bBfYrY/yEw="),
        "the D.10 vector: {ciphertext}"
    );
    let base = [
        "decrypt",
        "v3",
        "--apiv3-key",
        D10_KEY,
        "--nonce",
        "fdasflkja484",
        "--ciphertext",
        &ciphertext,
    ];
    let run = wxpay(&base, "");
    assert_eq!(
        (run.code, run.stdout.trim_end()),
        (0, D10_PLAIN),
        "{}",
        run.stderr
    );
    // An explicit empty AAD is the same as none; "transaction" is not.
    let mut with_empty = base.to_vec();
    with_empty.extend(["--associated-data", ""]);
    assert_eq!(wxpay(&with_empty, "").code, 0);
    let mut with_other = base.to_vec();
    with_other.extend(["--associated-data", "transaction"]);
    assert_eq!(wxpay(&with_other, "").code, 1);
}

#[test]
fn decrypt_v3_wrong_key_is_invalid_and_a_16_byte_key_is_refused() {
    let run = wxpay(
        &[
            "decrypt",
            "v3",
            "--apiv3-key",
            "VUTSRQPONMLKJIHGFEDCBA9876543210",
            "--nonce",
            "fdasflkja484",
            "--associated-data",
            "transaction",
            "--ciphertext",
            D10_CIPHERTEXT,
        ],
        "",
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("decryption failed"), "{}", run.stderr);
    assert!(!run.stderr.contains("VUTSRQPONMLKJIHGFEDCBA9876543210"));

    let run = wxpay(
        &[
            "decrypt",
            "v3",
            "--apiv3-key",
            "testAPIv3Key0000",
            "--nonce",
            "wCq51qZv4Yfg",
            "--associated-data",
            "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
            "--ciphertext",
            "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC",
        ],
        "",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("32 bytes, got 16"), "{}", run.stderr);
    assert!(!run.stderr.contains("testAPIv3Key0000"));
}

// ---------------------------------------------------------------------------------------------
// sim

#[test]
fn sim_serves_until_killed_and_keeps_its_merchant_in_the_state_dir() {
    use std::io::{BufRead as _, BufReader, Read as _};

    let dir = Scratch::new("sim");
    let state = dir.0.join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            p(&state),
            "--time-scale",
            "60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let http_line = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.trim_start().starts_with("http:"))
        .expect("the simulator prints its URL");
    let addr = http_line
        .trim()
        .trim_start_matches("http:")
        .trim()
        .trim_start_matches("http://")
        .to_owned();

    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    // A hung server fails the test instead of stalling it.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /sim/clock HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    let stopped = terminate(&mut child);
    read.unwrap();

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(state.join("merchant.json").is_file());
    assert!(
        stopped.success(),
        "SIGTERM stops the simulator cleanly: {stopped:?}"
    );
}

/// Sends SIGTERM (what service managers send) and waits up to 20 s for the process to stop;
/// a process that ignores it is killed and fails the test.
fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    panic!("the process did not stop on SIGTERM");
}

/// `wxpay serve` in sandbox mode in `dir` (SQLite there), stdout piped.
fn spawn_serve(dir: &Scratch, listen: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .arg("serve")
        .env("WXPAY_LISTEN", listen)
        .env(
            "WXPAY_DATABASE_URL",
            format!("sqlite://{}", p(&dir.0.join("wxpay.db"))),
        )
        .env("WXPAY_SANDBOX_DIR", p(&dir.0.join("sandbox")))
        .env_remove("WXPAY_CONFIG")
        .env_remove("WXPAY_MERCHANT_FILE")
        // No wxpay.toml there: the defaults and the variables above.
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn serve_starts_in_sandbox_mode_and_stops_cleanly_on_sigterm() {
    use std::io::{BufRead as _, BufReader};

    let dir = Scratch::new("serve");
    let mut child = spawn_serve(&dir, "127.0.0.1:0");
    // The banner is printed once the server listens.
    let banner = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|l| l.contains("http://127.0.0.1:"));
    let stopped = terminate(&mut child);
    assert!(banner.is_some(), "the sandbox banner names the URLs");
    assert!(
        stopped.success(),
        "SIGTERM stops the server cleanly: {stopped:?}"
    );
    assert!(dir.0.join("sandbox").join("merchant.json").is_file());
}

/// A supervisor that reads the URLs and hangs up (or a stdout that is closed from the start)
/// must not stop the server: the banner's write fails, and the server goes on serving.
#[test]
fn serve_keeps_serving_when_its_stdout_is_closed() {
    use std::io::{Read as _, Write as _};

    let dir = Scratch::new("serve-closed-stdout");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = spawn_serve(&dir, &format!("127.0.0.1:{port}"));
    // The read end is closed before the banner is written.
    drop(child.stdout.take());
    let mut answer = String::new();
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server stopped when its stdout was closed: {status:?}");
        }
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            answer.clear();
            stream.read_to_string(&mut answer).unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the server answers after its banner failed to print: {answer:?}"
    );
    let stopped = terminate(&mut child);
    assert!(stopped.success(), "SIGTERM stops it cleanly: {stopped:?}");
}

#[test]
fn serve_help_lists_every_configuration_key_with_its_default_and_the_flags() {
    let run = wxpay(&["serve", "--help"], "");
    assert_eq!(run.code, 0, "{}", run.stderr);
    for flag in ["--listen", "--database-url", "--config"] {
        assert!(run.stdout.contains(flag), "{flag} missing:\n{}", run.stdout);
    }
    for (key, default, _) in wxpay_server::config::KEYS {
        let line = run
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("{key} missing:\n{}", run.stdout));
        assert!(line.contains(default), "{line}");
    }
}

/// `wxpay serve` in `dir` with no WXPAY_* variable, to its end (it is expected to refuse).
fn serve_refused(dir: &Scratch, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wxpay"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WXPAY_") {
            command.env_remove(name);
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .arg("serve")
        .args(args)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

#[test]
fn serve_refuses_a_misspelt_key_or_bad_toml_in_one_line_naming_the_file() {
    let dir = Scratch::new("serve-typo");
    dir.file(
        "wxpay.toml",
        "databse_url = \"postgres://postgres@127.0.0.1:5432/test\"\n",
    );
    let run = serve_refused(&dir, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "one line: {line}");
    for needle in ["wxpay.toml", "databse_url", "did you mean `database_url`"] {
        assert!(line.contains(needle), "{needle} missing: {line}");
    }
    assert!(
        !dir.0.join("wxpay.db").exists(),
        "nothing started on SQLite"
    );

    let broken = dir.file("broken.toml", "listen = \"127.0.0.1:8080\nport = 1\n");
    let run = serve_refused(&dir, &["--config", p(&broken)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.trim_end();
    assert!(
        !line.contains('\n') && line.contains("broken.toml"),
        "{line}"
    );
}

#[test]
fn serve_takes_listen_database_url_and_config_flags() {
    use std::io::{BufRead as _, BufReader};

    let dir = Scratch::new("serve-flags");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.file(
        "elsewhere.toml",
        format!(
            "listen = \"127.0.0.1:1\"\nsandbox_dir = \"{}\"\n",
            p(&dir.0.join("sandbox"))
        ),
    );
    let db = dir.0.join("flags.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .args(["serve", "--config", p(&config), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database-url")
        .arg(format!("sqlite://{}", p(&db)))
        .env_remove("WXPAY_LISTEN")
        .env_remove("WXPAY_DATABASE_URL")
        .env_remove("WXPAY_CONFIG")
        .env_remove("WXPAY_MERCHANT_FILE")
        .env_remove("WXPAY_SANDBOX_DIR")
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let banner = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|l| l.contains(&format!("http://127.0.0.1:{port}")));
    let stopped = terminate(&mut child);
    assert!(banner.is_some(), "--listen wins over the file");
    assert!(stopped.success(), "{stopped:?}");
    assert!(db.is_file(), "--database-url is used");
    assert!(
        dir.0.join("sandbox").join("merchant.json").is_file(),
        "--config is read"
    );
}

/// The README's simulator walkthrough, run as written (on a free port, `wxpay` on the PATH): it
/// pays, sends its notifications nowhere near the sandbox server's :8080, and leaves nothing in
/// the directory it was started from. Needs bash, curl and jq.
#[test]
fn the_readme_simulator_walkthrough_runs_and_leaves_nothing_behind() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("W=$(mktemp -d)").expect("the walkthrough");
    let end = start + readme[start..].find("\n```").unwrap();
    let script = &readme[start..end];
    assert!(!script.contains(":8080"), "notifications go elsewhere");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A failing step must not leave the simulator running.
    let script = format!(
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
        script.replace("127.0.0.1:9090", &format!("127.0.0.1:{port}"))
    );
    let dir = Scratch::new("readme-walkthrough");
    let bin = Path::new(env!("CARGO_BIN_EXE_wxpay")).parent().unwrap();
    let path = format!("{}:{}", p(bin), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}", out.status);
    assert!(
        stdout.contains("\"SUCCESS\""),
        "the order is paid:\n{stdout}"
    );
    assert!(
        stdout.contains("\"acked\": false"),
        "the delivery log shows the unanswered attempts:\n{stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// A GET on 127.0.0.1:`port`, the whole answer (head and body); empty when nothing answers.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// The start of a sandbox server says where the emulator is, and its log holds no answer that was
/// bound to fail (the certificate download of a public-key merchant) nor an expected "no bill"
/// as news; latencies are printed to the tenth of a millisecond.
#[test]
fn serve_starts_quietly_and_its_banner_names_the_emulator() {
    use std::io::{BufRead as _, BufReader, Read as _};

    let dir = Scratch::new("serve-quiet");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxpay"))
        .arg("serve")
        .env("WXPAY_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "WXPAY_DATABASE_URL",
            format!("sqlite://{}", p(&dir.0.join("wxpay.db"))),
        )
        .env("WXPAY_SANDBOX_DIR", p(&dir.0.join("sandbox")))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("WXPAY_CONFIG")
        .env_remove("WXPAY_MERCHANT_FILE")
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("admin token") {
        assert!(stdout.read_line(&mut banner).unwrap() > 0, "{banner}");
    }
    // Every job, the certificate refresh and the daily bill included, has had its first run.
    let mut metrics = String::new();
    for _ in 0..600 {
        metrics = http_get(port, "/metrics");
        if metrics.contains("job=\"refresh_certificates\"")
            && metrics.contains("job=\"daily_bill\"")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(metrics.contains("job=\"daily_bill\""), "{metrics}");
    assert!(http_get(port, "/healthz").starts_with("HTTP/1.1 200"));
    let stopped = terminate(&mut child);
    assert!(stopped.success(), "{stopped:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();

    assert!(
        banner.contains(&format!("emulator:   http://127.0.0.1:{port}/emulator")),
        "{banner}"
    );
    for noise in ["status=404", "status=400", "/v3/certificates"] {
        assert!(!log.contains(noise), "{noise} in the start's log:\n{log}");
    }
    let healthz = log
        .lines()
        .find(|l| l.contains("path=/healthz"))
        .unwrap_or_else(|| panic!("the request is logged:\n{log}"));
    let ms = healthz
        .split_whitespace()
        .find_map(|f| f.strip_prefix("ms="))
        .unwrap_or_else(|| panic!("{healthz}"));
    let (whole, tenths) = ms.split_once('.').unwrap_or_else(|| panic!("{healthz}"));
    assert!(
        whole.bytes().all(|b| b.is_ascii_digit()) && tenths.len() == 1,
        "{healthz}"
    );
}

#[test]
fn sim_refuses_bad_settings_with_exit_2() {
    let dir = Scratch::new("sim-bad");
    let state = dir.0.join("state");
    let run = wxpay(
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            p(&state),
            "--time-scale",
            "0",
        ],
        "",
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--time-scale"), "{}", run.stderr);
    let run = wxpay(
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            p(&state),
            "--key-mode",
            "rsa",
        ],
        "",
    );
    assert_eq!(run.code, 2);
    let run = wxpay(
        &["sim", "--listen", "nowhere", "--state-dir", p(&state)],
        "",
    );
    assert_eq!(run.code, 2);
}

#[test]
fn v2_signing_refuses_a_key_that_is_not_32_characters() {
    for key in ["k", &D1_KEY[..31], &format!("{D1_KEY}x")] {
        let run = wxpay(&["sign", "v2", "--key", key], D1_JSON);
        assert_eq!(run.code, 2, "{key}: {}", run.stdout);
        assert!(run.stderr.contains("32-character"), "{}", run.stderr);
        let run = wxpay(
            &[
                "pay-sign",
                "v2",
                "--appid",
                "wxa",
                "--key",
                key,
                "--prepay-id",
                "wx1",
            ],
            "",
        );
        assert_eq!(run.code, 2, "{key}: {}", run.stdout);
        assert!(run.stderr.contains("32-character"), "{}", run.stderr);
        assert!(!run.stderr.contains(&D1_KEY[..31]), "the key is not echoed");
    }
}

#[test]
fn a_key_file_that_is_not_pem_is_reported_as_not_pem() {
    let dir = Scratch::new("not-pem");
    let body = dir.file("body.json", "{}");
    for content in [
        "hello\n",
        "apiclient_key\n\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
    ] {
        let key = dir.file("key.txt", content);
        let run = wxpay(
            &[
                "sign",
                "v3",
                "--mchid",
                "1",
                "--serial",
                "S",
                "--private-key",
                p(&key),
                "--method",
                "POST",
                "--url",
                "/v3/x",
                "--body-file",
                p(&body),
            ],
            "",
        );
        assert_eq!(run.code, 2);
        assert!(run.stderr.contains("not PEM"), "{}", run.stderr);
        assert!(!run.stderr.contains("NUL"), "{}", run.stderr);
    }
    // openssl's export puts "Bag Attributes" before the PEM: still read.
    let pem = std::fs::read_to_string(D5_KEY_PATH).unwrap();
    let key = dir.file(
        "bag.pem",
        format!("Bag Attributes\n    localKeyID: 01\n{pem}"),
    );
    let run = wxpay(
        &[
            "sign",
            "v3",
            "--mchid",
            "1",
            "--serial",
            "S",
            "--private-key",
            p(&key),
            "--method",
            "POST",
            "--url",
            "/v3/x",
            "--body-file",
            p(&body),
        ],
        "",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// A PostgreSQL error is told with its cause, without the line of PostgreSQL's C source that
/// sqlx appends ("at line 948"). Needs PostgreSQL at 127.0.0.1:5432.
#[test]
fn serve_reports_a_postgres_error_without_its_source_line() {
    let dir = Scratch::new("serve-pg");
    let missing = format!("wxpay_missing_{}", std::process::id());
    let run = serve_refused(
        &dir,
        &[
            "--database-url",
            &format!("postgres://postgres@127.0.0.1:5432/{missing}"),
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.stderr.trim_end();
    assert!(
        line.contains(&format!("database \"{missing}\" does not exist")),
        "{line}"
    );
    assert!(!line.contains(" at line "), "{line}");
}

// ---------------------------------------------------------------------------------------------
// helpers

/// The PKCS#1 `RSA PRIVATE KEY` PEM inside a PKCS#8 DER.
fn pkcs1_pem(pkcs8: &[u8]) -> String {
    use der::Reader as _;
    let mut reader = der::SliceReader::new(pkcs8).unwrap();
    let pkcs1 = reader
        .sequence(|r| {
            let _version: u8 = r.decode()?;
            let _algorithm: der::asn1::AnyRef<'_> = r.decode()?;
            let key: &der::asn1::OctetStringRef = r.decode()?;
            Ok::<_, der::Error>(key.as_bytes().to_vec())
        })
        .unwrap();
    der::pem::encode_string("RSA PRIVATE KEY", der::pem::LineEnding::LF, &pkcs1).unwrap()
}

fn self_signed_certificate(key: &RsaPrivateKey) -> String {
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &key.pkcs8_der().into(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tenpay.com Root CA test");
    params.self_signed(&pair).unwrap().pem()
}

//! Scenario 5: hostile and malformed input. Each request gets a clear 4xx in the API's format
//! (or WeChat's, on the notify URLs) and no table changes.

use secrecy::ExposeSecret as _;
use serde_json::json;
use wxpay_server::store::Backend;

use crate::harness::{figures, sandbox, table_counts};

const SQL: &str = "x'; DROP TABLE orders; --";
const SQL_OR: &str = "' OR '1'='1";

struct Case {
    name: String,
    method: &'static str,
    path: String,
    token: Token,
    content_type: &'static str,
    body: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Token {
    None,
    User,
    OtherUser,
    Admin,
}

fn case(
    name: &str,
    method: &'static str,
    path: &str,
    token: Token,
    content_type: &'static str,
    body: impl Into<Vec<u8>>,
) -> Case {
    Case {
        name: name.to_owned(),
        method,
        path: path.to_owned(),
        token,
        content_type,
        body: body.into(),
    }
}

fn json_case(name: &str, method: &'static str, path: &str, token: Token, body: &str) -> Case {
    case(name, method, path, token, "application/json", body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let s = sandbox(Backend::Sqlite, "v3", |_| {}).await;
    let app = &s.app;
    let admin = app
        .state
        .admin_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    let (_, token) = app.login().await;
    let (_, other_token) = app.login().await;
    let (_, _, paid_no) = app.paid_order().await;
    let mine = app
        .create_order(&token, json!([{"sku": "tea", "quantity": 1}]))
        .await;
    let my_no = mine.body["out_trade_no"].as_str().unwrap().to_owned();

    let laughs = {
        let mut x = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_owned()
            } else {
                format!("lol{}", i - 1)
            };
            x.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&{prev};").repeat(10)
            ));
        }
        x.push_str("]><xml><return_code>&lol9;</return_code></xml>");
        x
    };
    let mut cases = vec![
        // XML attacks on the v2 notify URLs.
        case(
            "DOCTYPE",
            "POST",
            "/notify/v2/pay",
            Token::None,
            "text/xml",
            "<!DOCTYPE xml><xml><return_code>SUCCESS</return_code></xml>",
        ),
        case(
            "external entity",
            "POST",
            "/notify/v2/pay",
            Token::None,
            "text/xml",
            "<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><out_trade_no>&xxe;</out_trade_no></xml>",
        ),
        case(
            "billion laughs",
            "POST",
            "/notify/v2/pay",
            Token::None,
            "text/xml",
            laughs.clone(),
        ),
        case(
            "billion laughs (refund URL)",
            "POST",
            "/notify/v2/refund",
            Token::None,
            "text/xml",
            laughs.clone(),
        ),
        case(
            "XML with a processing instruction and nesting",
            "POST",
            "/notify/v2/pay",
            Token::None,
            "text/xml",
            "<xml><a><b>1</b></a><?php evil ?></xml>",
        ),
        case(
            "JSON to the v2 URL",
            "POST",
            "/notify/v2/pay",
            Token::None,
            "application/json",
            "{\"return_code\":\"SUCCESS\"}",
        ),
        // Over the limits.
        case(
            "notification over 64 KiB",
            "POST",
            "/notify/v3/pay",
            Token::None,
            "application/json",
            format!("{{\"id\":\"{}\"}}", "x".repeat(70 * 1024)),
        ),
        case(
            "v2 notification over 64 KiB",
            "POST",
            "/notify/v2/pay",
            Token::None,
            "text/xml",
            format!("<xml><a>{}</a></xml>", "x".repeat(70 * 1024)),
        ),
        json_case(
            "order body over 16 KiB",
            "POST",
            "/api/orders",
            Token::User,
            &format!(
                "{{\"items\":[{{\"sku\":\"{}\",\"quantity\":1}}]}}",
                "c".repeat(20 * 1024)
            ),
        ),
        json_case(
            "login body over 16 KiB",
            "POST",
            "/api/login",
            Token::None,
            &format!("{{\"code\":\"{}\"}}", "c".repeat(20 * 1024)),
        ),
        // Invalid UTF-8.
        case(
            "invalid UTF-8 login",
            "POST",
            "/api/login",
            Token::None,
            "application/json",
            b"{\"code\":\"\xff\xfe\"}".to_vec(),
        ),
        case(
            "invalid UTF-8 order",
            "POST",
            "/api/orders",
            Token::User,
            "application/json",
            b"{\"items\":[{\"sku\":\"\xc3\x28\",\"quantity\":1}]}".to_vec(),
        ),
        case(
            "invalid UTF-8 v2 notification",
            "POST",
            "/notify/v2/pay",
            Token::None,
            "text/xml",
            b"<xml><out_trade_no>\xff\xfe</out_trade_no></xml>".to_vec(),
        ),
        case(
            "invalid UTF-8 v3 notification",
            "POST",
            "/notify/v3/pay",
            Token::None,
            "application/json",
            b"{\"id\":\"\xff\"}".to_vec(),
        ),
        // JSON of the wrong shape.
        json_case(
            "code is a number",
            "POST",
            "/api/login",
            Token::None,
            "{\"code\":5}",
        ),
        json_case(
            "login array",
            "POST",
            "/api/login",
            Token::None,
            "[\"code\"]",
        ),
        json_case(
            "login unknown field",
            "POST",
            "/api/login",
            Token::None,
            "{\"code\":\"abc\",\"admin\":true}",
        ),
        json_case(
            "login empty code",
            "POST",
            "/api/login",
            Token::None,
            "{\"code\":\"\"}",
        ),
        case(
            "login without JSON type",
            "POST",
            "/api/login",
            Token::None,
            "text/plain",
            "{\"code\":\"abc\"}",
        ),
        json_case(
            "items is a string",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":\"coffee\"}",
        ),
        json_case(
            "no quantity",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\"}]}",
        ),
        json_case(
            "no items",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[]}",
        ),
        json_case(
            "price sent by the client",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",\"quantity\":1,\"price_fen\":1}]}",
        ),
        json_case(
            "truncated JSON",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",",
        ),
        json_case(
            "same sku twice",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",\"quantity\":1},{\"sku\":\"coffee\",\"quantity\":1}]}",
        ),
        json_case(
            "v3 notification of the wrong shape",
            "POST",
            "/notify/v3/pay",
            Token::None,
            "{\"id\":1,\"resource\":[]}",
        ),
        // Huge or negative amounts.
        json_case(
            "negative quantity",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",\"quantity\":-1}]}",
        ),
        json_case(
            "zero quantity",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",\"quantity\":0}]}",
        ),
        json_case(
            "quantity 100",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",\"quantity\":100}]}",
        ),
        json_case(
            "quantity 2^64",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",\"quantity\":18446744073709551616}]}",
        ),
        json_case(
            "quantity 1e30",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",\"quantity\":1e30}]}",
        ),
        json_case(
            "fractional quantity",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"coffee\",\"quantity\":1.5}]}",
        ),
        json_case(
            "admin order of -5 fen",
            "POST",
            "/admin/orders",
            Token::Admin,
            "{\"openid\":\"o1\",\"amount_fen\":-5,\"description\":\"x\"}",
        ),
        json_case(
            "admin order of 0 fen",
            "POST",
            "/admin/orders",
            Token::Admin,
            "{\"openid\":\"o1\",\"amount_fen\":0,\"description\":\"x\"}",
        ),
        json_case(
            "admin order of 10^20 fen",
            "POST",
            "/admin/orders",
            Token::Admin,
            "{\"openid\":\"o1\",\"amount_fen\":100000000000000000000,\"description\":\"x\"}",
        ),
        json_case(
            "admin order of 2^63 fen",
            "POST",
            "/admin/orders",
            Token::Admin,
            "{\"openid\":\"o1\",\"amount_fen\":9223372036854775808,\"description\":\"x\"}",
        ),
        json_case(
            "amount in yuan as float",
            "POST",
            "/admin/orders",
            Token::Admin,
            "{\"openid\":\"o1\",\"amount_fen\":12.5,\"description\":\"x\"}",
        ),
        json_case(
            "refund of 0",
            "POST",
            &format!("/admin/orders/{paid_no}/refunds"),
            Token::Admin,
            "{\"amount_fen\":0}",
        ),
        json_case(
            "refund of -1",
            "POST",
            &format!("/admin/orders/{paid_no}/refunds"),
            Token::Admin,
            "{\"amount_fen\":-1}",
        ),
        json_case(
            "refund above the order",
            "POST",
            &format!("/admin/orders/{paid_no}/refunds"),
            Token::Admin,
            "{\"amount_fen\":999999999}",
        ),
        json_case(
            "refund of 2^64",
            "POST",
            &format!("/admin/orders/{paid_no}/refunds"),
            Token::Admin,
            "{\"amount_fen\":18446744073709551616}",
        ),
        json_case(
            "refund of an unpaid order",
            "POST",
            &format!("/admin/orders/{my_no}/refunds"),
            Token::Admin,
            "{\"amount_fen\":1}",
        ),
        json_case(
            "negative price",
            "PUT",
            "/admin/products/coffee",
            Token::Admin,
            "{\"name\":\"x\",\"price_fen\":-1}",
        ),
        json_case(
            "zero price",
            "PUT",
            "/admin/products/coffee",
            Token::Admin,
            "{\"name\":\"x\",\"price_fen\":0}",
        ),
        // Unknown skus.
        json_case(
            "unknown sku",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"caviar\",\"quantity\":1}]}",
        ),
        json_case(
            "empty sku",
            "POST",
            "/api/orders",
            Token::User,
            "{\"items\":[{\"sku\":\"\",\"quantity\":1}]}",
        ),
        // Another user's order.
        case(
            "another user's order",
            "GET",
            &format!("/api/orders/{my_no}"),
            Token::OtherUser,
            "",
            "",
        ),
        case(
            "pay another user's order",
            "POST",
            &format!("/api/orders/{my_no}/payment"),
            Token::OtherUser,
            "",
            "",
        ),
        case(
            "close another user's order",
            "POST",
            &format!("/api/orders/{my_no}/close"),
            Token::OtherUser,
            "",
            "",
        ),
        case(
            "no token",
            "GET",
            &format!("/api/orders/{my_no}"),
            Token::None,
            "",
            "",
        ),
    ];
    // SQL metacharacters in every string field.
    for (i, text) in [
        SQL,
        SQL_OR,
        "\\'; SELECT pg_sleep(10); --",
        "1; DELETE FROM sessions",
    ]
    .iter()
    .enumerate()
    {
        let quoted = serde_json::to_string(text).unwrap();
        let path_text: String = text.bytes().map(|b| format!("%{b:02X}")).collect();
        cases.extend([
            json_case(
                &format!("SQL {i} in the login code"),
                "POST",
                "/api/login",
                Token::None,
                &format!("{{\"code\":{quoted}}}"),
            ),
            json_case(
                &format!("SQL {i} in a sku"),
                "POST",
                "/api/orders",
                Token::User,
                &format!("{{\"items\":[{{\"sku\":{quoted},\"quantity\":1}}]}}"),
            ),
            case(
                &format!("SQL {i} in an order number"),
                "GET",
                &format!("/api/orders/{path_text}"),
                Token::User,
                "",
                "",
            ),
            case(
                &format!("SQL {i} in an order number (payment)"),
                "POST",
                &format!("/api/orders/{path_text}/payment"),
                Token::User,
                "",
                "",
            ),
            case(
                &format!("SQL {i} in an order number (admin)"),
                "GET",
                &format!("/admin/orders/{path_text}"),
                Token::Admin,
                "",
                "",
            ),
            case(
                &format!("SQL {i} in a refund number"),
                "GET",
                &format!("/admin/refunds/{path_text}"),
                Token::Admin,
                "",
                "",
            ),
            case(
                &format!("SQL {i} in a status filter"),
                "GET",
                &format!("/admin/orders?status={path_text}"),
                Token::Admin,
                "",
                "",
            ),
            case(
                &format!("SQL {i} in a cursor"),
                "GET",
                &format!("/admin/orders?cursor={path_text}"),
                Token::Admin,
                "",
                "",
            ),
            case(
                &format!("SQL {i} in a bill date"),
                "GET",
                &format!("/admin/reconciliation/{path_text}"),
                Token::Admin,
                "",
                "",
            ),
            json_case(
                &format!("SQL {i} in an openid"),
                "POST",
                "/admin/orders",
                Token::Admin,
                &format!("{{\"openid\":{quoted},\"amount_fen\":1,\"description\":\"x\"}}"),
            ),
            json_case(
                &format!("SQL {i} in a refund number (body)"),
                "POST",
                &format!("/admin/orders/{paid_no}/refunds"),
                Token::Admin,
                &format!("{{\"amount_fen\":1,\"out_refund_no\":{quoted}}}"),
            ),
            json_case(
                &format!("SQL {i} in a product sku"),
                "PUT",
                &format!("/admin/products/{path_text}"),
                Token::Admin,
                "{\"name\":\"x\",\"price_fen\":1}",
            ),
            case(
                &format!("SQL {i} in a bearer token"),
                "GET",
                "/api/orders",
                Token::None,
                "",
                "",
            ),
            case(
                &format!("SQL {i} in a wxacode scene"),
                "GET",
                &format!("/api/wxacode?scene={}", "%27".repeat(40)),
                Token::User,
                "",
                "",
            ),
        ]);
    }

    // The message-push URL of the mini program (its settings set: safe mode).
    let appid = app.state.registry.default_app().appid.clone();
    let set = app
        .send(
            app.http
                .patch(format!("{}/admin/apps/{appid}", app.base))
                .bearer_auth(&admin)
                .json(&json!({"push_token": "badInputToken1",
                    "push_encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"})),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let push = format!(
        "/notify/mp/{appid}?signature=0&timestamp=1&nonce=n&encrypt_type=aes&msg_signature=0"
    );
    cases.extend([
        case("push: DOCTYPE", "POST", &push, Token::None, "text/xml",
            "<!DOCTYPE xml><xml><Encrypt>x</Encrypt></xml>"),
        case("push: billion laughs", "POST", &push, Token::None, "text/xml", laughs),
        case("push: external entity", "POST", &push, Token::None, "text/xml",
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>&e;</Encrypt></xml>"),
        case("push: over 64 KiB", "POST", &push, Token::None, "application/json",
            format!("{{\"Encrypt\":\"{}\"}}", "A".repeat(70_000))),
        case("push: invalid UTF-8", "POST", &push, Token::None, "application/json",
            vec![b'{', 0xff, 0xfe, b'}']),
        json_case("push: JSON array", "POST", &push, Token::None, "[1,2,3]"),
        json_case("push: forged msg_signature", "POST", &push, Token::None,
            "{\"ToUserName\":\"gh_x\",\"Encrypt\":\"AAAA\"}"),
        json_case("push: plaintext while encrypted", "POST",
            &format!("/notify/mp/{appid}?signature=0&timestamp=1&nonce=n"), Token::None,
            "{\"ToUserName\":\"gh_x\",\"CreateTime\":1,\"MsgType\":\"event\",\"Event\":\"wxa_trade_controlled\"}"),
        json_case("push: no signature", "POST", &format!("/notify/mp/{appid}"), Token::None,
            "{\"ToUserName\":\"gh_x\",\"Encrypt\":\"AAAA\"}"),
        case("push: handshake with SQL", "GET",
            &format!("/notify/mp/{appid}?signature=%27%20OR%201%3D1--&timestamp=1&nonce=n&echostr=x"),
            Token::None, "", ""),
        json_case("push: unknown mini program", "POST",
            "/notify/mp/wx%27%20OR%201%3D1--?signature=0", Token::None, "{}"),
    ]);

    let pool = app.state.store.pool();
    let before = table_counts(pool).await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    // Bodies over a limit go on connections of their own: the server answers 413 without
    // reading them and closes the connection, which the pooled client must not reuse.
    let lone = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for c in &cases {
        let client = if c.body.len() > 16 * 1024 {
            &lone
        } else {
            &app.http
        };
        let mut request =
            client.request(c.method.parse().unwrap(), format!("{}{}", app.base, c.path));
        if !c.content_type.is_empty() {
            request = request.header("content-type", c.content_type);
        }
        if !c.body.is_empty() {
            request = request.body(c.body.clone());
        }
        request = match c.token {
            Token::None if c.name.contains("bearer") => request.bearer_auth(SQL_OR),
            Token::None => request,
            Token::User => request.bearer_auth(&token),
            Token::OtherUser => request.bearer_auth(&other_token),
            Token::Admin => request.bearer_auth(&admin),
        };
        let answer = app.send(request).await;
        assert!(
            (400..500).contains(&answer.status),
            "{}: {} {}",
            c.name,
            answer.status,
            String::from_utf8_lossy(&answer.bytes)
        );
        // The JSON API answers {"code","message"}; the notify URLs answer as WeChat expects.
        if c.path.starts_with("/notify/v3") {
            assert_eq!(answer.body["code"], "FAIL", "{}", c.name);
        } else if c.path.starts_with("/notify/mp") {
            // Message push answers text, never the event's content.
            assert!(
                !String::from_utf8_lossy(&answer.bytes).contains("success"),
                "{}",
                c.name
            );
        } else if c.path.starts_with("/notify/v2") {
            assert!(
                String::from_utf8_lossy(&answer.bytes).contains("FAIL"),
                "{}",
                c.name
            );
        } else {
            assert!(
                answer.body["code"].is_string() && answer.body["message"].is_string(),
                "{}: {:?}",
                c.name,
                answer.bytes
            );
        }
        *by_status.entry(answer.status).or_default() += 1;
    }
    assert_eq!(
        before,
        table_counts(pool).await,
        "refused input changed a table"
    );

    // Free text takes any character and is stored as given.
    let (buyer, _) = app.sim_user().await;
    let answer = app
        .post_json(
            "/admin/orders",
            Some(&admin),
            &json!({"openid": buyer, "amount_fen": 1, "description": SQL}),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let no = answer.body["out_trade_no"].as_str().unwrap();
    assert_eq!(
        app.state
            .store
            .order(no)
            .await
            .unwrap()
            .unwrap()
            .description,
        SQL
    );
    let after = table_counts(pool).await;
    assert_eq!(after["orders"], before["orders"] + 1);

    figures(
        "scenario 5 bad input",
        &[
            ("requests", cases.len().to_string()),
            (
                "answers_by_status",
                format!("{by_status:?}").replace(", ", " "),
            ),
            ("rows_changed", "0".into()),
        ],
    );
}

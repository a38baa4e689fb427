use super::trade::TradeColumn;
use super::*;
use crate::error::DecodeError;
use crate::money::Fen;
use proptest::prelude::*;
use time::PrimitiveDateTime;
use time::macros::datetime;

const D12_ROW: &str = "`2019-06-11 10:00:00,`wxd678efh567hg6787,`1230000109,`0,`,`4200000000000000000000000000,`1217752501201407033233368018,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`JSAPI,`SUCCESS,`OTHERS,`CNY,`1.00,`0.00,`0,`0,`0.00,`0.00,`,`,`test,`,`0.00600,`0.60%,`1.00,`0.00,`";
const D12_SUMMARY: &str = "`1,`1.00,`0.00,`0.00,`0.00600,`1.00,`0.00";

fn d12_text() -> String {
    [
        "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注",
        D12_ROW,
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额",
        D12_SUMMARY,
    ]
    .iter()
    .map(|l| format!("{l}\r\n"))
    .collect()
}

fn d12_row() -> TradeBillRow {
    TradeBillRow {
        trade_time: datetime!(2019-06-11 10:00:00),
        appid: "wxd678efh567hg6787".into(),
        mch_id: "1230000109".into(),
        sub_mch_id: "0".into(),
        device_info: String::new(),
        transaction_id: "4200000000000000000000000000".into(),
        out_trade_no: "1217752501201407033233368018".into(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        trade_type: "JSAPI".into(),
        trade_state: "SUCCESS".into(),
        bank_type: "OTHERS".into(),
        fee_type: "CNY".into(),
        settlement_total_fee: Fen::new(100),
        coupon_fee: Fen::ZERO,
        refund_apply_time: None,
        refund_success_time: None,
        refund_id: Some("0".into()),
        out_refund_no: Some("0".into()),
        refund_fee: Some(Fen::ZERO),
        recharge_refund_fee: Some(Fen::ZERO),
        refund_type: Some(String::new()),
        refund_status: Some(String::new()),
        body: "test".into(),
        attach: String::new(),
        fee: MilliFen::new(600),
        rate: "0.60%".into(),
        total_fee: Some(Fen::new(100)),
        refund_apply_fee: Some(Fen::ZERO),
        rate_note: Some(String::new()),
    }
}

#[test]
fn d12_bill_is_written_byte_for_byte() {
    let bill = TradeBill::from_rows(TradeBillKind::All, vec![d12_row()]).unwrap();
    let text = bill.to_text().unwrap();
    assert_eq!(text, d12_text());
    assert_eq!(
        sha1_hex(text.as_bytes()),
        "a4ee42dd6de909f53a607f3c9805e50ca478fc41"
    );
}

#[test]
fn d12_bill_parses_into_typed_rows() {
    let bill = parse_trade_bill(&d12_text()).unwrap();
    assert_eq!(bill.kind, TradeBillKind::All);
    assert_eq!(bill.rows, vec![d12_row()]);
    assert_eq!(bill.summary.total_count, 1);
    assert_eq!(bill.summary.fee, MilliFen::new(600));
    assert_eq!(bill.summary.total_fee, Some(Fen::new(100)));
    // LF line ends are accepted and change nothing.
    let lf = d12_text().replace("\r\n", "\n");
    assert_eq!(parse_trade_bill(&lf).unwrap(), bill);
    // A BOM and trailing blank lines are tolerated.
    assert_eq!(
        parse_trade_bill(&format!("\u{feff}{}\r\n\r\n", d12_text())).unwrap(),
        bill
    );
}

#[test]
fn legacy_success_and_refund_layouts_are_detected() {
    let legacy_header = "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,企业红包金额,微信退款单号,商户退款单号,退款金额,企业红包退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率";
    let legacy = format!(
        "{legacy_header}\n`2019-06-11 10:00:00,`wx1,`123,`0,`,`42,`T1,`o1,`JSAPI,`REFUND,`CMB_CREDIT,`CNY,`0.00,`0.00,`5000,`R1,`0.50,`0.00,`ORIGINAL,`SUCCESS,`a,b,`,`-0.00300,`0.60%\n总交易单数,总交易额,总退款金额,总企业红包退款金额,手续费总金额\n`1,`0.00,`0.50,`0.00,`-0.00300\n"
    );
    let bill = parse_trade_bill(&legacy).unwrap();
    assert_eq!(bill.kind, TradeBillKind::AllLegacy);
    let row = &bill.rows[0];
    assert_eq!(row.body, "a,b", "a plain comma inside a field is kept");
    assert_eq!(row.fee, MilliFen::new(-300));
    assert_eq!(row.refund_fee, Some(Fen::new(50)));
    assert_eq!(row.total_fee, None);
    assert_eq!(bill.summary.total_fee, None);
    assert_eq!(
        bill.summary,
        TradeBillSummary::from_rows(bill.kind, &bill.rows).unwrap()
    );
    // Written back with the canonical names, and read again to the same bill.
    let again = parse_trade_bill(&bill.to_text().unwrap()).unwrap();
    assert_eq!(again, bill);

    let mut row = d12_row();
    row.refund_id = None;
    row.out_refund_no = None;
    row.refund_fee = None;
    row.recharge_refund_fee = None;
    row.refund_type = None;
    row.refund_status = None;
    row.refund_apply_fee = None;
    let success = TradeBill::from_rows(TradeBillKind::Success, vec![row]).unwrap();
    let text = success.to_text().unwrap();
    assert!(text.starts_with("交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注\r\n"));
    assert_eq!(parse_trade_bill(&text).unwrap(), success);

    let mut row = d12_row();
    row.trade_state = "REFUND".into();
    row.refund_apply_time = Some(datetime!(2019-06-12 08:00:00));
    row.refund_success_time = None;
    row.refund_fee = Some(Fen::new(40));
    let refund = TradeBill::from_rows(TradeBillKind::Refund, vec![row]).unwrap();
    let text = refund.to_text().unwrap();
    assert!(text.contains("`2019-06-12 08:00:00,`,`0,"));
    assert_eq!(parse_trade_bill(&text).unwrap(), refund);
    assert_eq!(refund.summary.refund_fee, Fen::new(40));
}

#[test]
fn bad_bills_name_the_line() {
    let text = d12_text();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("a,b,c\r\n".into(), "line 1: not a known trade bill header"),
        (
            text.replace("`2019-06-11 10:00:00", "`2019-13-11 10:00:00"),
            "line 2: 交易时间",
        ),
        (
            text.replace("`1.00,`0.00,`0,", "`1.001,`0.00,`0,"),
            "line 2: 应结订单金额",
        ),
        (
            text.replace("`0.00600,`0.60%", "`0.000001,`0.60%"),
            "line 2: 手续费",
        ),
        (text.replace(",`test", ",test"), "line 2: expected 27"),
        (
            text.replace("`2019-06-11", "2019-06-11"),
            "line 2: expected the summary header",
        ),
        (
            text.replace(D12_SUMMARY, "`x,`1.00,`0.00,`0.00,`0.00600,`1.00,`0.00"),
            "line 4: 总交易单数",
        ),
        (
            text.replace(&format!("{D12_SUMMARY}\r\n"), ""),
            "line 4: the summary line is missing",
        ),
        (format!("{text}`extra\r\n"), "line 5: unexpected content"),
        (
            text.replace(D12_ROW, &format!("{D12_ROW}\r\n")),
            "line 3: empty line",
        ),
    ];
    for (input, expected) in cases {
        match parse_trade_bill(&input) {
            Err(DecodeError::Bill(msg)) => {
                assert!(msg.contains(expected), "{msg:?} lacks {expected:?}")
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
}

#[test]
fn writer_refuses_ambiguous_fields() {
    let mut row = d12_row();
    row.body = "a\r\nb".into();
    let bill = TradeBill::from_rows(TradeBillKind::All, vec![row.clone()]).unwrap();
    assert!(matches!(bill.to_text(), Err(DecodeError::Bill(m)) if m.contains("line 2")));
    row.body = "a,`b".into();
    let bill = TradeBill::from_rows(TradeBillKind::All, vec![row.clone()]).unwrap();
    assert!(bill.to_text().is_err());
    row.body = "ends,".into();
    let bill = TradeBill::from_rows(TradeBillKind::All, vec![row]).unwrap();
    assert!(bill.to_text().is_err());
}

fn fund_flow_text() -> String {
    "记账时间,微信支付业务单号,资金流水单号,业务名称,业务类型,收支类型,收支金额（元）,账户结余（元）,资金变更提交申请人,备注,业务凭证号\r\n\
     `2019-06-11 10:00:00,`4200000000000000000000000000,`1900000109201906110000000001,`交易,`交易,`收入,`1.00,`1.00,`system,`,`4200000000000000000000000000\r\n\
     `2019-06-11 10:00:00,`4200000000000000000000000000,`1900000109201906110000000002,`扣除交易手续费,`扣除交易手续费,`支出,`0.01,`0.99,`system,`,`4200000000000000000000000000\r\n\
     资金流水总笔数,收入笔数,收入金额,支出笔数,支出金额\r\n\
     `2,`1,`1.00,`1,`0.01\r\n"
        .to_owned()
}

#[test]
fn fund_flow_bill_round_trips() {
    let bill = parse_fund_flow_bill(&fund_flow_text()).unwrap();
    assert_eq!(bill.rows.len(), 2);
    assert_eq!(bill.rows[0].direction, FundFlowDirection::Income);
    assert_eq!(bill.rows[1].amount, Fen::new(1));
    assert_eq!(bill.rows[1].balance, Fen::new(99));
    assert_eq!(
        bill.summary,
        FundFlowSummary::from_rows(&bill.rows).unwrap()
    );
    assert_eq!(bill.to_text().unwrap(), fund_flow_text());
    let ascii_parens = fund_flow_text().replace("（元）", "(元)");
    assert_eq!(parse_fund_flow_bill(&ascii_parens).unwrap(), bill);
    let broken = fund_flow_text().replace("`0.01,`0.99", "`0.01,`x");
    assert!(
        matches!(parse_fund_flow_bill(&broken), Err(DecodeError::Bill(m)) if m.starts_with("line 3: 账户结余"))
    );
    assert!(
        matches!(parse_fund_flow_bill(&d12_text()), Err(DecodeError::Bill(m)) if m.starts_with("line 1"))
    );
}

#[test]
fn milli_fen_is_exact() {
    assert_eq!(MilliFen::parse_yuan("0.00600"), Ok(MilliFen::new(600)));
    assert_eq!(MilliFen::parse_yuan("-1.5"), Ok(MilliFen::new(-150_000)));
    assert_eq!(MilliFen::parse_yuan("12"), Ok(MilliFen::new(1_200_000)));
    assert_eq!(MilliFen::new(-300).to_yuan_string(), "-0.00300");
    assert_eq!(MilliFen::new(123_456_789).to_yuan_string(), "1234.56789");
    for bad in [
        "",
        "-",
        ".",
        "1.000001",
        "1e3",
        "--1",
        "0x1",
        "99999999999999999999",
    ] {
        assert!(MilliFen::parse_yuan(bad).is_err(), "{bad}");
    }
}

#[test]
fn gunzip_is_limited_and_bill_text_detects_gzip() {
    use std::io::Write as _;
    let text = d12_text();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    assert!(is_gzip(&gz));
    assert_eq!(gunzip_limited(&gz, text.len()).unwrap(), text.as_bytes());
    assert!(
        matches!(gunzip_limited(&gz, text.len() - 1), Err(DecodeError::Bill(m)) if m.contains("limit"))
    );
    assert_eq!(bill_text(&gz, 1 << 20).unwrap(), text);
    assert_eq!(bill_text(text.as_bytes(), 1 << 20).unwrap(), text);
    assert!(matches!(
        bill_text(text.as_bytes(), 10),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(gunzip_limited(b"\x1f\x8bnot really gzip", 100).is_err());
    assert_eq!(bill_text(&[0xff, 0xfe], 100), Err(DecodeError::NotUtf8));

    // A bomb: 64 MiB of zeros compress to ~64 KiB; only limit + 1 bytes are ever inflated.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    assert!(gunzip_limited(&bomb, 1 << 20).is_err());
}

fn text_field() -> impl Strategy<Value = String> {
    // Free text without line breaks; commas and backticks allowed where unambiguous.
    "[a-zA-Z0-9 _,`|*%中文@.-]{0,12}"
        .prop_filter("ambiguous", |s| !s.contains(",`") && !s.ends_with(','))
}

fn time_strategy() -> impl Strategy<Value = PrimitiveDateTime> {
    (2000i32..2100, 1u8..=12, 1u8..=28, 0u8..24, 0u8..60, 0u8..60).prop_map(
        |(y, mo, d, h, mi, s)| {
            let date =
                time::Date::from_calendar_date(y, time::Month::try_from(mo).unwrap(), d).unwrap();
            PrimitiveDateTime::new(date, time::Time::from_hms(h, mi, s).unwrap())
        },
    )
}

fn fen_strategy() -> impl Strategy<Value = Fen> {
    (0u64..10_000_000_000).prop_map(Fen::new)
}

fn row_strategy(kind: TradeBillKind) -> impl Strategy<Value = TradeBillRow> {
    let texts = proptest::collection::vec(text_field(), 18);
    let fens = proptest::collection::vec(fen_strategy(), 6);
    let times = proptest::collection::vec(proptest::option::of(time_strategy()), 2);
    (
        time_strategy(),
        texts,
        fens,
        times,
        -10_000_000i64..10_000_000_000,
    )
        .prop_map(move |(trade_time, t, f, times, fee)| {
            let has = |c| kind.has(c);
            let opt = |c, v: &String| has(c).then(|| v.clone());
            let opt_fen = |c, v: Fen| has(c).then_some(v);
            use TradeColumn as C;
            TradeBillRow {
                trade_time,
                appid: t[0].clone(),
                mch_id: t[1].clone(),
                sub_mch_id: t[2].clone(),
                device_info: t[3].clone(),
                transaction_id: t[4].clone(),
                out_trade_no: t[5].clone(),
                openid: t[6].clone(),
                trade_type: t[7].clone(),
                trade_state: t[8].clone(),
                bank_type: t[9].clone(),
                fee_type: t[10].clone(),
                settlement_total_fee: f[0],
                coupon_fee: f[1],
                refund_apply_time: if has(C::RefundApplyTime) {
                    times[0]
                } else {
                    None
                },
                refund_success_time: if has(C::RefundSuccessTime) {
                    times[1]
                } else {
                    None
                },
                refund_id: opt(C::RefundId, &t[11]),
                out_refund_no: opt(C::OutRefundNo, &t[12]),
                refund_fee: opt_fen(C::RefundFee, f[2]),
                recharge_refund_fee: opt_fen(C::RechargeRefundFee, f[3]),
                refund_type: opt(C::RefundType, &t[13]),
                refund_status: opt(C::RefundStatus, &t[14]),
                body: t[15].clone(),
                attach: t[16].clone(),
                fee: MilliFen::new(fee),
                rate: t[17].clone(),
                total_fee: opt_fen(C::TotalFee, f[4]),
                refund_apply_fee: opt_fen(C::RefundApplyFee, f[5]),
                rate_note: opt(C::RateNote, &t[0]),
            }
        })
}

fn bill_strategy() -> impl Strategy<Value = TradeBill> {
    proptest::sample::select(TradeBillKind::KINDS.to_vec()).prop_flat_map(|kind| {
        proptest::collection::vec(row_strategy(kind), 0..5)
            .prop_map(move |rows| TradeBill::from_rows(kind, rows).unwrap())
    })
}

proptest! {
    #[test]
    fn trade_bill_writer_and_parser_are_inverse(bill in bill_strategy()) {
        let text = bill.to_text().unwrap();
        let parsed = parse_trade_bill(&text).unwrap();
        prop_assert_eq!(&parsed, &bill);
        prop_assert_eq!(parsed.to_text().unwrap(), text);
    }

    #[test]
    fn fund_flow_writer_and_parser_are_inverse(
        rows in proptest::collection::vec(
            (time_strategy(), proptest::collection::vec(text_field(), 7), proptest::bool::ANY, fen_strategy(), fen_strategy()),
            0..5,
        )
    ) {
        let rows: Vec<FundFlowRow> = rows
            .into_iter()
            .map(|(booking_time, t, income, amount, balance)| FundFlowRow {
                booking_time,
                business_no: t[0].clone(),
                flow_no: t[1].clone(),
                business_name: t[2].clone(),
                business_type: t[3].clone(),
                direction: if income { FundFlowDirection::Income } else { FundFlowDirection::Expense },
                amount,
                balance,
                applicant: t[4].clone(),
                remark: t[5].clone(),
                voucher_no: t[6].clone(),
            })
            .collect();
        let bill = FundFlowBill::from_rows(rows).unwrap();
        let text = bill.to_text().unwrap();
        prop_assert_eq!(parse_fund_flow_bill(&text).unwrap(), bill);
    }

    #[test]
    fn parser_never_panics(text in "[`,\r\n0-9a-z.: -]{0,200}") {
        let _ = parse_trade_bill(&text);
        let _ = parse_fund_flow_bill(&text);
    }

    #[test]
    fn parser_never_panics_on_mutated_bills(pos in 0usize..700, ch in proptest::char::any()) {
        let mut text = d12_text();
        let mut at = pos.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert(at, ch);
        let _ = parse_trade_bill(&text);
    }
}

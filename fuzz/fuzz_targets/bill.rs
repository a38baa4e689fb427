//! The bill parsers: the download body (gzip or text, size-limited) and the trade and fund-flow
//! bill texts. Never panics; a parsed bill prints back to text that parses to the same bill.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wxpay::bill::bill_text(data, 1 << 20);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bill) = wxpay::bill::parse_trade_bill(text) {
            if let Ok(printed) = bill.to_text() {
                let again = wxpay::bill::parse_trade_bill(&printed).expect("printed bill parses");
                assert_eq!(again.rows.len(), bill.rows.len());
            }
        }
        if let Ok(bill) = wxpay::bill::parse_fund_flow_bill(text) {
            if let Ok(printed) = bill.to_text() {
                let again =
                    wxpay::bill::parse_fund_flow_bill(&printed).expect("printed bill parses");
                assert_eq!(again.rows.len(), bill.rows.len());
            }
        }
    }
});

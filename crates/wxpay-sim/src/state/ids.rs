//! Identifiers in WeChat's shapes that encode the record's position, so that a lookup by
//! `prepay_id`, `transaction_id` or `refund_id` needs no second index.

use super::clock::{v2_time, yyyymmdd};

pub(super) fn prepay_id(id: u32, created_at: i64, nonce: u64) -> String {
    format!(
        "wx{}{:08x}{:012x}",
        v2_time(created_at),
        id,
        nonce & 0xFFFF_FFFF_FFFF
    )
}

pub(super) fn transaction_id(id: u32, success_time: i64, nonce: u16) -> String {
    format!(
        "420000{}{:010}{:04}",
        yyyymmdd(success_time),
        id,
        nonce % 10_000
    )
}

pub(super) fn refund_id(seq: u32, created_at: i64, nonce: u32) -> String {
    format!(
        "503000{}{:010}{:05}",
        yyyymmdd(created_at),
        seq,
        nonce % 100_000
    )
}

/// The order number encoded in a prepay id, if it has the simulator's shape.
pub(super) fn id_of_prepay(prepay: &str) -> Option<u32> {
    if prepay.len() != 36 || !prepay.starts_with("wx") {
        return None;
    }
    u32::from_str_radix(prepay.get(16..24)?, 16).ok()
}

pub(super) fn id_of_transaction(tx: &str) -> Option<u32> {
    if tx.len() != 28 || !tx.starts_with("420000") || !tx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    tx.get(14..24)?.parse().ok()
}

pub(super) fn seq_of_refund_id(id: &str) -> Option<u32> {
    if id.len() != 29 || !id.starts_with("503000") || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.get(14..24)?.parse().ok()
}

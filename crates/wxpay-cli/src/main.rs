//! The `wxpay` binary.
fn main() {}

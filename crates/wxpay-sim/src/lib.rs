//! wxpay-sim: a local WeChat Pay (API v2 + v3) and mini-program server API.
#![forbid(unsafe_code)]

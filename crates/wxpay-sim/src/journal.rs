//! What the simulator keeps across restarts of its state directory: users, orders and refunds
//! (the keys are in `merchant.json` and `simulator-secrets.json` already), so that a merchant
//! server's database and a restarted sandbox still agree.
//!
//! The state is an append-only journal of JSON lines (`journal.jsonl`): each change of a user,
//! an order or a refund appends the whole new record, and a start replays the file, the last line
//! of a record winning. Appending costs one small write per change, whatever the number of
//! orders, where rewriting a snapshot would cost the whole store. A line cut short by a crash is
//! skipped on replay (only the change being written is lost).

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A mini-program user.
    User(UserLine),
    /// An order, as it is after a change.
    Order(OrderLine),
    /// A refund, as it is after a change.
    Refund(RefundLine),
    /// A sub-merchant of the simulated service provider, as registered (the last line wins).
    SubMerchant(SubMerchantLine),
    /// A user of a sub-merchant's mini program (`sub_appid`).
    SubUser(SubUserLine),
    /// The partner facts of an order made through `/v3/pay/partner/transactions/jsapi` (the
    /// order itself is an `order` line).
    PartnerOrder(PartnerOrderLine),
    /// The trade-management record of a paid order (shipping, receipt), as it is after a
    /// change.
    Trade(crate::trade::TradeLine),
    /// A merchant added at run time (`POST /sim/merchants`); its keys are in its own directory.
    Merchant(MerchantLine),
    /// A mini program added at run time (`POST /sim/apps`, or a new merchant's own).
    App(AppLine),
    /// A merchant transfer bill, as it is after a change.
    TransferBill(crate::transfers::BillLine),
    /// An authorization of 免确认 transfers, as it is after a change.
    TransferAuthorization(crate::transfers::AuthorizationLine),
    /// A merchant's 运营账户 balance after a change.
    TransferBalance(crate::transfers::BalanceLine),
    /// A user's real name (what a transfer's `user_name` must match).
    TransferPayee(crate::transfers::PayeeLine),
}

/// A merchant added at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantLine {
    /// Its merchant id.
    pub mchid: String,
    /// Its key mode (`public_key`, `certificate`, `migrating`).
    pub key_mode: String,
    /// The directory of its `merchant.json`, relative to the state directory.
    pub dir: String,
}

/// A mini program added at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppLine {
    /// Its AppID.
    pub appid: String,
    /// Its AppSecret (the journal is readable by its owner only, like `merchant.json`).
    pub app_secret: String,
    /// The merchant it is bound to.
    pub mchid: String,
}

/// A sub-merchant (特约商户) of a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubMerchantLine {
    /// The provider; absent for the first merchant (and in lines written before providers
    /// other than the first merchant existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    /// Its merchant id.
    pub sub_mchid: String,
    /// Its own mini program, if bound.
    pub sub_appid: Option<String>,
}

/// A user of a sub-merchant's mini program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubUserLine {
    /// The mini program.
    pub sub_appid: String,
    /// The user's openid under it.
    pub openid: String,
}

/// What a partner order adds to its order record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerOrderLine {
    /// The order.
    pub out_trade_no: String,
    /// The sub-merchant.
    pub sub_mchid: String,
    /// The `sub_appid` the prepay carried.
    pub sub_appid: Option<String>,
    /// Whether the payer was given as `sub_openid` (else `sp_openid`).
    pub sub_payer: bool,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLine {
    /// The openid.
    pub openid: String,
    /// The unionid.
    pub unionid: String,
    /// SHA-256 (hex) of the user's key, which `POST /sim/users/{openid}/code` requires; absent
    /// in journals written before user keys existed (such users get codes only with the
    /// simulator's control token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key_sha256: Option<String>,
    /// The mini program of the user; absent for the first mini program's users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
}

/// Every field of an order record, so that a replayed order has the same ids (`prepay_id`,
/// `transaction_id` encode its position and nonces).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct OrderLine {
    pub out_trade_no: String,
    pub openid: String,
    pub attach: Option<String>,
    pub description: String,
    pub appid: String,
    pub mchid: String,
    pub notify_url: String,
    pub device_info: Option<String>,
    pub total: u64,
    pub refunded: u64,
    pub created_at: i64,
    pub time_expire: i64,
    pub prepay_created_at: i64,
    pub prepay_nonce: u64,
    pub success_time: i64,
    pub tx_nonce: u16,
    pub refund_count: u8,
    pub state: String,
    pub version: String,
    pub sign_type: String,
    pub trade_type: String,
}

/// Every field of a refund.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RefundLine {
    pub out_refund_no: String,
    pub refund_id: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub amount: u64,
    pub total: u64,
    pub status: String,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
    pub version: String,
    pub created_at: i64,
    pub success_time: Option<i64>,
    pub due_at: i64,
}

/// The open journal, shared by the store and the mini program.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl Journal {
    /// Opens (or creates) the journal of `dir` and reads what it holds, oldest first.
    ///
    /// # Errors
    /// When the file cannot be read or opened for appending.
    pub fn open(dir: &Path) -> std::io::Result<(Self, Vec<Entry>)> {
        let path = dir.join(JOURNAL_FILE);
        let mut entries = Vec::new();
        match File::open(&path) {
            Ok(file) => {
                for (n, line) in BufReader::new(file).lines().enumerate() {
                    let line = line?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Entry>(&line) {
                        Ok(entry) => entries.push(entry),
                        Err(e) => tracing::warn!(
                            path = %path.display(), line = n + 1, error = %e,
                            "journal line skipped (cut short by a crash?)"
                        ),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            // Buyers' openids and orders: readable by the owner only, like merchant.json.
            options.mode(0o600);
        }
        let mut file = options.open(&path)?;
        // A line cut short by a crash must not swallow the next one.
        if std::fs::metadata(&path)?.len() > 0 && !ends_with_newline(&path)? {
            file.write_all(b"\n")?;
        }
        Ok((
            Self {
                path,
                file: Mutex::new(BufWriter::new(file)),
            },
            entries,
        ))
    }

    /// Appends one entry and hands it to the OS (a failure is logged: the simulator keeps
    /// serving from memory).
    pub fn append(&self, entry: &Entry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "journal entry not serialised");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::error!(path = %self.path.display(), error = %e, "journal write failed");
        }
    }
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_reopen_and_a_torn_line_is_skipped() {
        let dir = std::env::temp_dir().join(format!("wxpay-journal-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let user = Entry::User(UserLine {
            openid: "o1".into(),
            unionid: "u1".into(),
            user_key_sha256: Some("00".repeat(32)),
            appid: None,
        });
        {
            let (journal, entries) = Journal::open(&dir).unwrap();
            assert!(entries.is_empty());
            journal.append(&user);
        }
        // A crash in the middle of a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL_FILE))
            .unwrap();
        f.write_all(br#"{"kind":"user","openid":"o2""#).unwrap();
        drop(f);
        let (journal, entries) = Journal::open(&dir).unwrap();
        assert_eq!(entries, vec![user.clone()]);
        journal.append(&user);
        drop(journal);
        let (_, entries) = Journal::open(&dir).unwrap();
        assert_eq!(entries, vec![user.clone(), user]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

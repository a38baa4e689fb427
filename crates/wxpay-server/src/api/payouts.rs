//! Payouts over HTTP: the back office makes and follows merchant transfers, the mini program
//! lists its user's and gets the `wx.requestMerchantTransfer` object of one, and WeChat
//! notifies their final states. The rules are in [`crate::core::payouts`].

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wxpay::v3::notify::{FAIL_ACK, Notification};
use wxpay::v3::transfers::TransferState;

use super::admin::{Admin, ErrorBody};
use super::extract::{JsonBody, Path, Query, User};
use super::tenants::Principal;
use crate::app::AppState;
use crate::core::payouts::{self, PayoutCreated, PayoutError, PayoutRequest};
use crate::error::ApiError;
use crate::store::{ReportInfo, Transfer, TransferEvent, TransferFilter};

/// The back office's payout routes.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/transfers", get(list).post(create))
        .route("/admin/transfers/limits", get(limits))
        .route("/admin/transfers/limits/{mchid}", put(set_limits))
        .route("/admin/transfers/{out_bill_no}", get(detail))
        .route("/admin/transfers/{out_bill_no}/cancel", post(cancel))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::app::MAX_API_BODY,
        ))
}

/// The mini program's payout routes.
pub fn mini_routes() -> Router<AppState> {
    Router::new()
        .route("/api/transfers", get(user_transfers))
        .route("/api/transfers/{out_bill_no}/confirm", post(confirm))
}

/// `POST /admin/transfers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfer {
    /// The mini program the user confirms in (default: the only one registered).
    pub appid: Option<String>,
    /// The payee: a user who logged in to that mini program here.
    #[serde(alias = "user")]
    pub openid: String,
    /// In fen, at least 10 (0.1 yuan).
    pub amount_fen: u64,
    /// WeChat's transfer scene id: `1000` 现金营销, `1005` 佣金报酬, `1011` 企业赔付, ...
    pub scene: String,
    /// The scene's report infos: `1000` needs `活动名称` and `奖励说明`, `1005` `岗位类型` and
    /// `报酬说明`, `1011` `赔付原因`.
    #[serde(default)]
    pub report_infos: Vec<ReportInfo>,
    /// What the user is told the money is (`1000`: `现金奖励` or `活动奖励`; `1011`: `退款` or
    /// `商家赔付`).
    pub perception: Option<String>,
    /// Shown to the user, 1 to 32 characters.
    pub remark: String,
    /// Why (kept with the operator for the audit), 1 to 200 characters.
    pub reason: String,
    /// The payee's real name: required from 200000 fen, possible from 30; encrypted for WeChat
    /// at once and never stored or shown.
    pub user_name: Option<String>,
    /// Your own number (1 to 32 letters or digits): the same request again makes no second
    /// transfer. Made up when absent.
    pub out_bill_no: Option<String>,
}

/// A transfer as the back office sees it (schema `Transfer`): never the confirm package or the
/// encrypted name.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Transfer)]
pub struct TransferView {
    /// The merchant's bill number.
    pub out_bill_no: String,
    /// The paying merchant.
    pub mchid: String,
    /// The mini program.
    pub appid: String,
    /// The payee.
    pub openid: String,
    /// In fen.
    pub amount_fen: u64,
    /// WeChat's scene id.
    pub scene: String,
    /// The scene's infos.
    pub report_infos: Vec<ReportInfo>,
    /// What the user is told.
    pub perception: Option<String>,
    /// Shown to the user.
    pub remark: String,
    /// Why it was made.
    pub reason: String,
    /// Whether a name was sent.
    pub named: bool,
    /// WeChat's state: `ACCEPTED` (not yet answered: sent again), `PROCESSING`,
    /// `WAIT_USER_CONFIRM`, `TRANSFERING`, `SUCCESS`, `FAIL`, `CANCELING`, `CANCELLED`.
    pub status: String,
    /// WeChat's bill number.
    pub transfer_bill_no: Option<String>,
    /// Why it failed (WeChat's `fail_reason`, or the code WeChat refused it with).
    pub fail_reason: Option<String>,
    /// Who made it: `admin` or `operator:ID`.
    pub operator: String,
    /// The day (GMT+8) it counts against.
    pub day: String,
    /// Failed sends and checks.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
    /// When it became final (Unix ms).
    pub finished_at: Option<i64>,
}

impl From<&Transfer> for TransferView {
    fn from(t: &Transfer) -> Self {
        TransferView {
            out_bill_no: t.out_bill_no.clone(),
            mchid: t.mchid.clone(),
            appid: t.appid.clone(),
            openid: t.openid.clone(),
            amount_fen: t.amount_fen,
            scene: t.scene_id.clone(),
            report_infos: t.report_infos.clone(),
            perception: t.perception.clone(),
            remark: t.remark.clone(),
            reason: t.reason.clone(),
            named: t.user_name.is_some(),
            status: t.status.as_str().to_owned(),
            transfer_bill_no: t.transfer_bill_no.clone(),
            fail_reason: t.fail_reason.clone(),
            operator: t.operator.clone(),
            day: t.day.clone(),
            attempts: t.attempts,
            last_error: t.last_error.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
            finished_at: t.finished_at,
        }
    }
}

/// A transfer with its timeline (schema `TransferDetail`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferDetail {
    /// The transfer.
    #[serde(flatten)]
    pub transfer: TransferView,
    /// Its timeline, oldest first.
    pub timeline: Vec<TransferEvent>,
}

/// A page of transfers.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferList {
    /// Newest first.
    pub transfers: Vec<TransferView>,
}

fn operator_of(principal: &Principal) -> String {
    match principal {
        Principal::Admin => "admin".to_owned(),
        Principal::Operator { id, .. } => format!("operator:{id}"),
    }
}

/// `POST /admin/transfers`: pays a mini-program user back to their WeChat balance, once they
/// confirm it in the mini program. 201 new (its state says how far WeChat took it; `ACCEPTED`
/// means WeChat did not answer and it is sent again by the job), 200 a repeat of the same
/// `out_bill_no`.
#[utoipa::path(post, path = "/admin/transfers", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    request_body = CreateTransfer,
    responses((status = 201, body = TransferView, description = "Made and sent; the state tells how far"),
        (status = 200, body = TransferView, description = "The same request again: nothing new"),
        (status = 400, body = ErrorBody, description = "Invalid, unknown_user, unknown_app, appid_required"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "over_daily_budget, over_user_daily_cap, out_bill_no_used, transfers_unavailable")))]
pub(crate) async fn create(
    principal: Principal,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateTransfer>,
) -> Result<Response, ApiError> {
    let created = payouts::create(
        &state.store,
        &state.registry,
        &state.settings,
        PayoutRequest {
            appid: body.appid,
            openid: body.openid,
            amount_fen: body.amount_fen,
            scene_id: body.scene,
            report_infos: body.report_infos,
            perception: body.perception,
            remark: body.remark,
            reason: body.reason,
            user_name: body.user_name,
            out_bill_no: body.out_bill_no,
        },
        &operator_of(&principal),
        principal.merchant(),
    )
    .await?;
    Ok(match created {
        PayoutCreated::New(t) => {
            (StatusCode::CREATED, Json(TransferView::from(&t))).into_response()
        }
        PayoutCreated::Existing(t) => {
            (StatusCode::OK, Json(TransferView::from(&t))).into_response()
        }
    })
}

/// `?mchid=&appid=&openid=&status=&limit=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTransfersQuery {
    /// One merchant's (an operator sees only its own).
    pub mchid: Option<String>,
    /// One mini program's.
    pub appid: Option<String>,
    /// One user's.
    pub openid: Option<String>,
    /// One state (`WAIT_USER_CONFIRM`, `SUCCESS`, ...).
    pub status: Option<String>,
    /// 1 to 500 (default 50).
    pub limit: Option<u32>,
}

/// `GET /admin/transfers`: transfers, newest first.
#[utoipa::path(get, path = "/admin/transfers", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    params(ListTransfersQuery),
    responses((status = 200, body = TransferList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list(
    principal: Principal,
    State(state): State<AppState>,
    Query(q): Query<ListTransfersQuery>,
) -> Result<Json<TransferList>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => {
            let state = TransferState::from_wire(s);
            if matches!(state, TransferState::Unknown(_)) {
                return Err(ApiError::bad_request(format!("unknown status {s}")));
            }
            Some(state)
        }
    };
    let mchid = match principal.merchant() {
        Some(own) => Some(own.to_owned()),
        None => q.mchid,
    };
    let transfers = state
        .store
        .list_transfers(&TransferFilter {
            mchid,
            appid: q.appid,
            openid: q.openid,
            status,
            limit: q.limit.unwrap_or(50),
        })
        .await?;
    Ok(Json(TransferList {
        transfers: transfers.iter().map(TransferView::from).collect(),
    }))
}

async fn visible(state: &AppState, principal: &Principal, no: &str) -> Result<Transfer, ApiError> {
    state
        .store
        .transfer(no)
        .await?
        .filter(|t| principal.may_act_for(&t.mchid))
        .ok_or_else(|| ApiError::not_found("no such transfer"))
}

/// `GET /admin/transfers/{out_bill_no}`: a transfer and its timeline (who made it and why,
/// what WeChat said, each notification).
#[utoipa::path(get, path = "/admin/transfers/{out_bill_no}", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    params(("out_bill_no" = String, Path, description = "The merchant's bill number")),
    responses((status = 200, body = TransferDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn detail(
    principal: Principal,
    State(state): State<AppState>,
    Path(no): Path<String>,
) -> Result<Json<TransferDetail>, ApiError> {
    let transfer = visible(&state, &principal, &no).await?;
    let timeline = state.store.transfer_events(&no).await?;
    Ok(Json(TransferDetail {
        transfer: TransferView::from(&transfer),
        timeline,
    }))
}

/// `POST /admin/transfers/{out_bill_no}/cancel`: cancels a transfer its user has not confirmed
/// (`CANCELING`, then `CANCELLED` and `transfer.cancelled`).
#[utoipa::path(post, path = "/admin/transfers/{out_bill_no}/cancel", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    params(("out_bill_no" = String, Path, description = "The merchant's bill number")),
    responses((status = 200, body = TransferView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "transfer_state: confirmed or final"),
        (status = 502, body = ErrorBody, description = "WeChat refused or could not be reached")))]
pub(crate) async fn cancel(
    principal: Principal,
    State(state): State<AppState>,
    Path(no): Path<String>,
) -> Result<Json<TransferView>, ApiError> {
    let transfer = visible(&state, &principal, &no).await?;
    let after = payouts::cancel(
        &state.store,
        &state.registry,
        &transfer,
        &operator_of(&principal),
    )
    .await?;
    Ok(Json(TransferView::from(&after)))
}

/// A merchant's transfer limits and today's use (schema `TransferLimits`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsView {
    /// The merchant.
    pub mchid: String,
    /// The day (GMT+8).
    pub day: String,
    /// What the merchant may pay out per day, in fen.
    pub daily_budget_fen: u64,
    /// What one user may receive per day, in fen.
    pub user_daily_cap_fen: u64,
    /// Whether these are the merchant's own limits (else the server's defaults).
    pub own: bool,
    /// Reserved today (transfers not failed or cancelled), in fen.
    pub used_today_fen: u64,
    /// What is left today, in fen.
    pub left_today_fen: u64,
}

/// `GET /admin/transfers/limits`: each visible merchant's limits and what is left today.
#[utoipa::path(get, path = "/admin/transfers/limits", tag = "admin", security(("admin_token" = []), ("operator_token" = [])),
    responses((status = 200, body = Vec<LimitsView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn limits(
    principal: Principal,
    State(state): State<AppState>,
) -> Result<Json<Vec<LimitsView>>, ApiError> {
    let day = payouts::today();
    let mut out = Vec::new();
    let mut mchids: Vec<String> = state
        .registry
        .merchants()
        .iter()
        .map(|w| w.mchid.clone())
        .filter(|m| principal.may_act_for(m))
        .collect();
    mchids.sort();
    mchids.dedup();
    for mchid in mchids {
        let l = payouts::limits(&state.store, &state.settings, &mchid).await?;
        let used = state.store.transfer_budget_used(&mchid, &day).await?;
        out.push(LimitsView {
            left_today_fen: l.daily_budget_fen.saturating_sub(used),
            mchid,
            day: day.clone(),
            daily_budget_fen: l.daily_budget_fen,
            user_daily_cap_fen: l.user_daily_cap_fen,
            own: l.own,
            used_today_fen: used,
        });
    }
    Ok(Json(out))
}

/// `PUT /admin/transfers/limits/{mchid}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLimits {
    /// What the merchant may pay out per day, in fen.
    pub daily_budget_fen: u64,
    /// What one user may receive per day, in fen.
    pub user_daily_cap_fen: u64,
}

/// `PUT /admin/transfers/limits/{mchid}`: a merchant's own limits (the admin token only: an
/// operator cannot raise its own budget).
#[utoipa::path(put, path = "/admin/transfers/limits/{mchid}", tag = "admin", security(("admin_token" = [])),
    params(("mchid" = String, Path, description = "The merchant")),
    request_body = SetLimits,
    responses((status = 200, body = LimitsView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn set_limits(
    _admin: Admin,
    State(state): State<AppState>,
    Path(mchid): Path<String>,
    JsonBody(body): JsonBody<SetLimits>,
) -> Result<Json<LimitsView>, ApiError> {
    state.registry.merchant(&mchid)?;
    let max = crate::core::orders::MAX_ORDER_FEN.saturating_mul(1000);
    if body.daily_budget_fen > max || body.user_daily_cap_fen > max {
        return Err(ApiError::bad_request(format!(
            "limits must be at most {max} fen"
        )));
    }
    state
        .store
        .set_transfer_limits(&mchid, body.daily_budget_fen, body.user_daily_cap_fen)
        .await?;
    let day = payouts::today();
    let used = state.store.transfer_budget_used(&mchid, &day).await?;
    Ok(Json(LimitsView {
        left_today_fen: body.daily_budget_fen.saturating_sub(used),
        mchid,
        day,
        daily_budget_fen: body.daily_budget_fen,
        user_daily_cap_fen: body.user_daily_cap_fen,
        own: true,
        used_today_fen: used,
    }))
}

/// A transfer as its user sees it (schema `UserTransfer`).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserTransfer {
    /// The bill number.
    pub out_bill_no: String,
    /// In fen.
    pub amount_fen: u64,
    /// What the merchant wrote.
    pub remark: String,
    /// WeChat's state.
    pub status: String,
    /// Whether it waits for the user's confirmation (`POST .../confirm`).
    pub can_confirm: bool,
    /// Unix ms.
    pub created_at: i64,
    /// When it became final (Unix ms).
    pub finished_at: Option<i64>,
}

/// The user's transfers.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserTransferList {
    /// Newest first (at most 50).
    pub transfers: Vec<UserTransfer>,
}

/// `GET /api/transfers`: the caller's transfers, newest first; those waiting for them first
/// of all.
#[utoipa::path(get, path = "/api/transfers", tag = "mini program", security(("session_token" = [])),
    responses((status = 200, body = UserTransferList), (status = 401, body = ErrorBody)))]
pub(crate) async fn user_transfers(
    State(state): State<AppState>,
    user: User,
) -> Result<Json<UserTransferList>, ApiError> {
    let transfers = state
        .store
        .list_transfers(&TransferFilter {
            appid: Some(user.appid),
            openid: Some(user.openid),
            limit: 50,
            ..TransferFilter::default()
        })
        .await?;
    let mut out: Vec<UserTransfer> = transfers
        .iter()
        // A transfer WeChat has not taken yet is not the user's business.
        .filter(|t| t.status != TransferState::Accepted)
        .map(|t| UserTransfer {
            out_bill_no: t.out_bill_no.clone(),
            amount_fen: t.amount_fen,
            remark: t.remark.clone(),
            status: t.status.as_str().to_owned(),
            can_confirm: t.status == TransferState::WaitUserConfirm && t.package_info.is_some(),
            created_at: t.created_at,
            finished_at: t.finished_at,
        })
        .collect();
    out.sort_by_key(|t| !t.can_confirm);
    Ok(Json(UserTransferList { transfers: out }))
}

/// The object for `wx.requestMerchantTransfer` (schema `RequestMerchantTransfer`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RequestMerchantTransfer)]
pub struct ConfirmObject {
    /// The merchant.
    #[serde(rename = "mchId")]
    pub mch_id: String,
    /// The mini program.
    #[serde(rename = "appId")]
    pub app_id: String,
    /// WeChat's `package_info`.
    pub package: String,
    /// The payee.
    #[serde(rename = "openId", skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
}

/// `POST /api/transfers/{out_bill_no}/confirm`: the `wx.requestMerchantTransfer` object of one
/// of the caller's transfers that waits for them. The result comes by WeChat's notification:
/// poll `GET /api/transfers`.
#[utoipa::path(post, path = "/api/transfers/{out_bill_no}/confirm", tag = "mini program", security(("session_token" = [])),
    params(("out_bill_no" = String, Path, description = "The transfer")),
    responses((status = 200, body = ConfirmObject), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "transfer_state: not waiting for the user")))]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    user: User,
    Path(no): Path<String>,
) -> Result<Json<ConfirmObject>, ApiError> {
    let object = payouts::confirm_object(
        &state.store,
        &state.registry,
        &user.appid,
        &user.openid,
        &no,
    )
    .await?;
    Ok(Json(ConfirmObject {
        mch_id: object.mch_id,
        app_id: object.app_id,
        package: object.package,
        open_id: object.open_id,
    }))
}

/// `POST /notify/{mchid}/v3/transfer`: `MCHTRANSFER.BILL.FINISHED`, verified with the
/// merchant's keys, checked against the transfer and applied once; 204, or 4xx/5xx so that
/// WeChat retries.
#[utoipa::path(post, path = "/notify/{mchid}/v3/transfer", tag = "notifications",
    params(("mchid" = String, Path, description = "The merchant (its own URL: its APIv3 key decrypts)")),
    request_body(content = String, description = "The transfer notification (signed, encrypted), exactly as WeChat Pay sends it", content_type = "application/json"),
    responses((status = 204, description = "Acknowledged"),
        (status = 400, description = "Refused: WeChat retries"), (status = 401, description = "Signature refused"),
        (status = 404, description = "Unknown merchant or transfer: WeChat retries"),
        (status = 500, description = "Not stored: WeChat retries")))]
pub(crate) async fn notify(
    State(state): State<AppState>,
    axum::extract::Path(mchid): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let refuse = |status: StatusCode, reason: &str| {
        tracing::warn!(%mchid, status = status.as_u16(), reason, "transfer notification refused");
        (
            status,
            [(http::header::CONTENT_TYPE, "application/json")],
            FAIL_ACK,
        )
            .into_response()
    };
    let Ok(wechat) = state.registry.merchant(&mchid) else {
        return refuse(StatusCode::NOT_FOUND, "unknown merchant");
    };
    let Ok(body) = body else {
        return refuse(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let notification = match wechat.v3.parse_notification(&headers, &body).await {
        Ok(n) => n,
        Err(err) => {
            let status = if matches!(err, wxpay::Error::Signature(_)) {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            return refuse(status, &err.to_string());
        }
    };
    let Notification::Transfer(n) = notification else {
        return refuse(StatusCode::BAD_REQUEST, "not a transfer notification");
    };
    match payouts::apply_notified(&state.store, &mchid, &n.bill).await {
        Ok(t) => {
            tracing::info!(out_bill_no = %t.out_bill_no, state = t.status.as_str(), "transfer notification applied");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(PayoutError::NotFound) => refuse(StatusCode::NOT_FOUND, "unknown transfer"),
        Err(PayoutError::Store(e)) => {
            tracing::error!(error = %e, "database error while applying a transfer notification");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "database error")
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

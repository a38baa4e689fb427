//! The registry in the back office (admin token): merchants (direct, or service providers with
//! their sub-merchants), mini programs, and the merchants' operators. No answer carries a
//! secret: the views show what is configured (`has_platform_cert`, `has_p12`, the public key's
//! id, the serial), never the keys, the AppSecret, a token or its hash.
//!
//! [`Principal`] admits the admin token or a live operator's token; only `GET /admin/whoami`
//! uses it so far.

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch};
use axum::{Json, Router};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::admin::{Admin, ErrorBody};
use super::extract::{JsonBody, Path, Query, bearer, token_hash};
use crate::app::AppState;
use crate::core::tenants::{
    self, MerchantPatch, MiniProgramPatch, NewMerchant, NewMiniProgram, NewSubMerchant,
    SubMerchantPatch, is_id,
};
use crate::error::ApiError;
use crate::store::{
    ApiVersion, MerchantKind, MerchantRecord, MiniProgramRecord, OperatorRecord, RegistrySource,
    SubMerchantRecord,
};

/// Largest body of these routes: a merchant's credentials (PEM texts, a PKCS#12 in base64).
pub const MAX_REGISTRY_BODY: usize = 64 * 1024;

/// The registry's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/merchants",
            get(list_merchants).post(create_merchant),
        )
        .route(
            "/admin/merchants/{mchid}",
            get(get_merchant).patch(update_merchant),
        )
        .route(
            "/admin/merchants/{mchid}/sub-merchants",
            get(list_sub_merchants).post(create_sub_merchant),
        )
        .route(
            "/admin/merchants/{mchid}/sub-merchants/{sub_mchid}",
            patch(update_sub_merchant),
        )
        .route("/admin/apps", get(list_apps).post(create_app))
        .route("/admin/apps/{appid}", get(get_app).patch(update_app))
        .route(
            "/admin/operators",
            get(list_operators).post(create_operator),
        )
        .route("/admin/operators/{id}", delete(revoke_operator))
        .route("/admin/whoami", get(whoami))
        .route("/admin/registry/version", get(registry_version))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REGISTRY_BODY))
}

/// Who is calling: the admin token, or a live operator's token (acting for one merchant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The back office's admin token.
    Admin,
    /// An operator of a merchant.
    Operator {
        /// The merchant it acts for.
        mchid: String,
        /// The operator's id.
        id: String,
    },
}

impl Principal {
    /// The merchant an operator is confined to; `None` for the admin token.
    #[must_use]
    pub fn merchant(&self) -> Option<&str> {
        match self {
            Principal::Admin => None,
            Principal::Operator { mchid, .. } => Some(mchid),
        }
    }

    /// Whether the caller may see and act on what belongs to `mchid`.
    #[must_use]
    pub fn may_act_for(&self, mchid: &str) -> bool {
        self.merchant().is_none_or(|m| m == mchid)
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if Admin::from_request_parts(parts, state).await.is_ok() {
            return Ok(Principal::Admin);
        }
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                "Authorization: Bearer ADMIN_TOKEN or an operator's token is required",
            )
        })?;
        match state
            .store
            .operator_by_token_hash(&token_hash(token))
            .await?
        {
            Some(operator) => Ok(Principal::Operator {
                mchid: operator.mchid,
                id: operator.id,
            }),
            None => Err(ApiError::unauthorized(
                "the token is neither the admin token nor a live operator's",
            )),
        }
    }
}

/// A merchant as the back office sees it (schema `Merchant`): never its keys.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Merchant)]
pub struct MerchantView {
    /// The merchant id.
    pub mchid: String,
    /// A name for people.
    pub name: String,
    /// `direct` or `provider`.
    pub kind: MerchantKind,
    /// A provider's own appid (`sp_appid`), which its requests are signed as; null for a
    /// direct merchant.
    pub sp_appid: Option<String>,
    /// The API its payments use.
    pub api_version: ApiVersion,
    /// Whether it may be used.
    pub enabled: bool,
    /// `file` (the merchant file's; its secrets stay there) or `registered`.
    pub source: RegistrySource,
    /// Its API certificate's serial.
    pub merchant_serial: String,
    /// The WeChat Pay public key's id, when configured.
    pub public_key_id: Option<String>,
    /// Whether a platform certificate is configured.
    pub has_platform_cert: bool,
    /// Whether `apiclient_cert.p12` is configured (v2 refunds).
    pub has_p12: bool,
    /// How many mini programs pay through it.
    pub app_count: u64,
    /// How many sub-merchants it has (providers).
    pub sub_merchant_count: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

fn merchant_view(m: MerchantRecord, app_count: u64, sub_merchant_count: u64) -> MerchantView {
    MerchantView {
        mchid: m.mchid,
        name: m.name,
        kind: m.kind,
        sp_appid: m.sp_appid,
        api_version: m.api_version,
        enabled: m.enabled,
        source: m.source,
        merchant_serial: m.merchant_serial,
        public_key_id: m.wechatpay_public_key_id,
        has_platform_cert: m.has_platform_cert,
        has_p12: m.has_p12,
        app_count,
        sub_merchant_count,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// A merchant with its sub-merchants and mini programs.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantDetail {
    /// The merchant.
    #[serde(flatten)]
    pub merchant: MerchantView,
    /// Its sub-merchants (providers), by sub_mchid.
    pub sub_merchants: Vec<SubMerchantView>,
    /// The mini programs paying through it, by appid.
    pub apps: Vec<MiniProgramView>,
}

/// The merchants.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantList {
    /// By mchid.
    pub merchants: Vec<MerchantView>,
}

/// A mini program as the back office sees it (schema `MiniProgram`): never its AppSecret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MiniProgram)]
pub struct MiniProgramView {
    /// The appid.
    pub appid: String,
    /// A name for people.
    pub name: String,
    /// The merchant it pays through.
    pub mchid: String,
    /// The provider's sub-merchant it pays through.
    pub sub_mchid: Option<String>,
    /// Whether it may be used.
    pub enabled: bool,
    /// `file` or `registered`.
    pub source: RegistrySource,
    /// Whether an AppSecret is stored (sealed); the file's is in the file.
    pub has_app_secret: bool,
    /// Whether its message push (Token, and EncodingAESKey or not) is set: WeChat's pushes to
    /// `/notify/mp/{appid}` are then verified and applied.
    pub has_push: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl From<MiniProgramRecord> for MiniProgramView {
    fn from(a: MiniProgramRecord) -> Self {
        MiniProgramView {
            has_app_secret: a.app_secret.is_some(),
            has_push: a.push_settings.is_some(),
            appid: a.appid,
            name: a.name,
            mchid: a.mchid,
            sub_mchid: a.sub_mchid,
            enabled: a.enabled,
            source: a.source,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// The mini programs.
#[derive(Debug, Serialize, ToSchema)]
pub struct MiniProgramList {
    /// By appid.
    pub apps: Vec<MiniProgramView>,
}

/// A provider's sub-merchant (schema `SubMerchant`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SubMerchant)]
pub struct SubMerchantView {
    /// The provider.
    pub sp_mchid: String,
    /// The sub-merchant's id.
    pub sub_mchid: String,
    /// A name for people.
    pub name: String,
    /// The sub-merchant's own mini program.
    pub sub_appid: Option<String>,
    /// Whether it may be used.
    pub enabled: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

impl From<SubMerchantRecord> for SubMerchantView {
    fn from(s: SubMerchantRecord) -> Self {
        SubMerchantView {
            sp_mchid: s.sp_mchid,
            sub_mchid: s.sub_mchid,
            name: s.name,
            sub_appid: s.sub_appid,
            enabled: s.enabled,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A provider's sub-merchants.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubMerchantList {
    /// By sub_mchid.
    pub sub_merchants: Vec<SubMerchantView>,
}

/// An operator (schema `Operator`): never its token or the token's hash.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Operator)]
pub struct OperatorView {
    /// Its id.
    pub id: String,
    /// The merchant it acts for.
    pub mchid: String,
    /// A name for people.
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When it was revoked (its token is refused since).
    pub revoked_at: Option<i64>,
}

impl From<OperatorRecord> for OperatorView {
    fn from(o: OperatorRecord) -> Self {
        OperatorView {
            id: o.id,
            mchid: o.mchid,
            name: o.name,
            created_at: o.created_at,
            revoked_at: o.revoked_at,
        }
    }
}

/// The operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorList {
    /// Oldest first, revoked ones included.
    pub operators: Vec<OperatorView>,
}

/// `POST /admin/operators`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperator {
    /// The merchant it acts for.
    pub mchid: String,
    /// A name for people (1 to 64 characters).
    pub name: String,
}

/// A new operator and its token: shown this once (only its hash is stored).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedOperator {
    /// The operator.
    #[serde(flatten)]
    pub operator: OperatorView,
    /// `Authorization: Bearer TOKEN` for this operator.
    pub token: String,
}

/// `?mchid=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MerchantFilter {
    /// Only this merchant's.
    pub mchid: Option<String>,
}

/// Who is calling (`GET /admin/whoami`).
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// `admin` or `operator`.
    pub kind: String,
    /// The operator's merchant.
    pub mchid: Option<String>,
    /// The operator's id.
    pub operator_id: Option<String>,
}

/// The registry's version.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryVersion {
    /// Raised by every change of merchants, mini programs, sub-merchants and operators.
    pub version: i64,
}

fn not_found_unless_id(value: &str, what: &'static str) -> Result<(), ApiError> {
    if is_id(value) {
        Ok(())
    } else {
        Err(ApiError::not_found(what))
    }
}

async fn detail(state: &AppState, m: MerchantRecord) -> Result<MerchantDetail, ApiError> {
    let subs = state.store.sub_merchants(&m.mchid).await?;
    let apps = state.store.mini_programs(Some(&m.mchid)).await?;
    let (app_count, sub_count) = (apps.len() as u64, subs.len() as u64);
    Ok(MerchantDetail {
        merchant: merchant_view(m, app_count, sub_count),
        sub_merchants: subs.into_iter().map(SubMerchantView::from).collect(),
        apps: apps.into_iter().map(MiniProgramView::from).collect(),
    })
}

/// `GET /admin/merchants`: every merchant, the merchant file's included.
#[utoipa::path(get, path = "/admin/merchants", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = MerchantList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_merchants(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<MerchantList>, ApiError> {
    let counts = state.store.merchant_counts().await?;
    let merchants = state.store.merchants().await?;
    let count_of = |mchid: &str| {
        counts
            .iter()
            .find(|(m, ..)| m == mchid)
            .map_or((0, 0), |(_, a, s)| {
                (
                    u64::try_from(*a).unwrap_or(0),
                    u64::try_from(*s).unwrap_or(0),
                )
            })
    };
    Ok(Json(MerchantList {
        merchants: merchants
            .into_iter()
            .map(|m| {
                let (apps, subs) = count_of(&m.mchid);
                merchant_view(m, apps, subs)
            })
            .collect(),
    }))
}

/// `POST /admin/merchants`: registers a merchant. Its credentials are checked as a whole (as
/// the merchant file's are) and stored sealed under `WXPAY_MASTER_KEY`.
#[utoipa::path(post, path = "/admin/merchants", tag = "admin", security(("admin_token" = [])),
    request_body = NewMerchant,
    responses((status = 201, body = MerchantDetail),
        (status = 400, body = ErrorBody, description = "Invalid credentials; the message names the field"),
        (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already_exists, or master_key_required")))]
pub(crate) async fn create_merchant(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewMerchant>,
) -> Result<Response, ApiError> {
    let m = tenants::register_merchant(&state.store, state.master_key.as_ref(), body).await?;
    Ok((StatusCode::CREATED, Json(detail(&state, m).await?)).into_response())
}

/// `GET /admin/merchants/{mchid}`: a merchant with its sub-merchants and mini programs.
#[utoipa::path(get, path = "/admin/merchants/{mchid}", tag = "admin", security(("admin_token" = [])),
    params(("mchid" = String, Path, description = "The merchant id")),
    responses((status = 200, body = MerchantDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_merchant(
    _: Admin,
    State(state): State<AppState>,
    Path(mchid): Path<String>,
) -> Result<Json<MerchantDetail>, ApiError> {
    not_found_unless_id(&mchid, "no such merchant")?;
    let m = state
        .store
        .merchant(&mchid)
        .await?
        .ok_or_else(|| ApiError::not_found("no such merchant"))?;
    Ok(Json(detail(&state, m).await?))
}

/// `PATCH /admin/merchants/{mchid}`: name, `enabled`, `api_version`, and (registered merchants)
/// credentials replaced in part or whole, checked again as a whole (`null` removes an optional
/// one, e.g. `platform_cert` after switching to the WeChat Pay public key).
#[utoipa::path(patch, path = "/admin/merchants/{mchid}", tag = "admin", security(("admin_token" = [])),
    params(("mchid" = String, Path, description = "The merchant id")),
    request_body = MerchantPatch,
    responses((status = 200, body = MerchantDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "master_key_required, from_merchant_file, credentials_unreadable, changed_meanwhile")))]
pub(crate) async fn update_merchant(
    _: Admin,
    State(state): State<AppState>,
    Path(mchid): Path<String>,
    JsonBody(body): JsonBody<MerchantPatch>,
) -> Result<Json<MerchantDetail>, ApiError> {
    not_found_unless_id(&mchid, "no such merchant")?;
    let m = tenants::update_merchant(&state.store, state.master_key.as_ref(), &mchid, body).await?;
    Ok(Json(detail(&state, m).await?))
}

/// `GET /admin/merchants/{mchid}/sub-merchants`.
#[utoipa::path(get, path = "/admin/merchants/{mchid}/sub-merchants", tag = "admin", security(("admin_token" = [])),
    params(("mchid" = String, Path, description = "The provider's merchant id")),
    responses((status = 200, body = SubMerchantList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_sub_merchants(
    _: Admin,
    State(state): State<AppState>,
    Path(mchid): Path<String>,
) -> Result<Json<SubMerchantList>, ApiError> {
    not_found_unless_id(&mchid, "no such merchant")?;
    if state.store.merchant(&mchid).await?.is_none() {
        return Err(ApiError::not_found("no such merchant"));
    }
    Ok(Json(SubMerchantList {
        sub_merchants: state
            .store
            .sub_merchants(&mchid)
            .await?
            .into_iter()
            .map(SubMerchantView::from)
            .collect(),
    }))
}

/// `POST /admin/merchants/{mchid}/sub-merchants`: adds a sub-merchant (特约商户) to a service
/// provider (409 `not_a_provider` for a direct merchant).
#[utoipa::path(post, path = "/admin/merchants/{mchid}/sub-merchants", tag = "admin", security(("admin_token" = [])),
    params(("mchid" = String, Path, description = "The provider's merchant id")),
    request_body = NewSubMerchant,
    responses((status = 201, body = SubMerchantView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already_exists, not_a_provider")))]
pub(crate) async fn create_sub_merchant(
    _: Admin,
    State(state): State<AppState>,
    Path(mchid): Path<String>,
    JsonBody(body): JsonBody<NewSubMerchant>,
) -> Result<Response, ApiError> {
    not_found_unless_id(&mchid, "no such merchant")?;
    let s = tenants::add_sub_merchant(&state.store, &mchid, body).await?;
    Ok((StatusCode::CREATED, Json(SubMerchantView::from(s))).into_response())
}

/// `PATCH /admin/merchants/{mchid}/sub-merchants/{sub_mchid}`: name, `sub_appid`, `enabled`.
#[utoipa::path(patch, path = "/admin/merchants/{mchid}/sub-merchants/{sub_mchid}", tag = "admin",
    security(("admin_token" = [])),
    params(("mchid" = String, Path, description = "The provider's merchant id"),
        ("sub_mchid" = String, Path, description = "The sub-merchant's id")),
    request_body = SubMerchantPatch,
    responses((status = 200, body = SubMerchantView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update_sub_merchant(
    _: Admin,
    State(state): State<AppState>,
    Path((mchid, sub_mchid)): Path<(String, String)>,
    JsonBody(body): JsonBody<SubMerchantPatch>,
) -> Result<Json<SubMerchantView>, ApiError> {
    not_found_unless_id(&mchid, "no such sub-merchant")?;
    not_found_unless_id(&sub_mchid, "no such sub-merchant")?;
    let s = tenants::update_sub_merchant(&state.store, &mchid, &sub_mchid, body).await?;
    Ok(Json(SubMerchantView::from(s)))
}

/// `GET /admin/apps?mchid=`: the mini programs, the merchant file's included.
#[utoipa::path(get, path = "/admin/apps", tag = "admin", security(("admin_token" = [])), params(MerchantFilter),
    responses((status = 200, body = MiniProgramList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_apps(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<MerchantFilter>,
) -> Result<Json<MiniProgramList>, ApiError> {
    let mchid = q.mchid.as_deref().filter(|m| !m.is_empty());
    Ok(Json(MiniProgramList {
        apps: state
            .store
            .mini_programs(mchid)
            .await?
            .into_iter()
            .map(MiniProgramView::from)
            .collect(),
    }))
}

/// `POST /admin/apps`: registers a mini program paying through a merchant (a provider's through
/// one of its sub-merchants); its AppSecret is stored sealed.
#[utoipa::path(post, path = "/admin/apps", tag = "admin", security(("admin_token" = [])),
    request_body = NewMiniProgram,
    responses((status = 201, body = MiniProgramView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "already_exists, master_key_required, not_a_provider")))]
pub(crate) async fn create_app(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewMiniProgram>,
) -> Result<Response, ApiError> {
    let a = tenants::register_mini_program(&state.store, state.master_key.as_ref(), body).await?;
    Ok((StatusCode::CREATED, Json(MiniProgramView::from(a))).into_response())
}

/// `GET /admin/apps/{appid}`.
#[utoipa::path(get, path = "/admin/apps/{appid}", tag = "admin", security(("admin_token" = [])),
    params(("appid" = String, Path, description = "The appid")),
    responses((status = 200, body = MiniProgramView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_app(
    _: Admin,
    State(state): State<AppState>,
    Path(appid): Path<String>,
) -> Result<Json<MiniProgramView>, ApiError> {
    not_found_unless_id(&appid, "no such mini program")?;
    state
        .store
        .mini_program(&appid)
        .await?
        .map(|a| Json(MiniProgramView::from(a)))
        .ok_or_else(|| ApiError::not_found("no such mini program"))
}

/// `PATCH /admin/apps/{appid}`: name, `enabled`, `app_secret`, `mchid`, `sub_mchid`.
#[utoipa::path(patch, path = "/admin/apps/{appid}", tag = "admin", security(("admin_token" = [])),
    params(("appid" = String, Path, description = "The appid")),
    request_body = MiniProgramPatch,
    responses((status = 200, body = MiniProgramView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn update_app(
    _: Admin,
    State(state): State<AppState>,
    Path(appid): Path<String>,
    JsonBody(body): JsonBody<MiniProgramPatch>,
) -> Result<Json<MiniProgramView>, ApiError> {
    not_found_unless_id(&appid, "no such mini program")?;
    let a =
        tenants::update_mini_program(&state.store, state.master_key.as_ref(), &appid, body).await?;
    Ok(Json(MiniProgramView::from(a)))
}

/// `GET /admin/operators?mchid=`: the operators, revoked ones included (never a token).
#[utoipa::path(get, path = "/admin/operators", tag = "admin", security(("admin_token" = [])), params(MerchantFilter),
    responses((status = 200, body = OperatorList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_operators(
    _: Admin,
    State(state): State<AppState>,
    Query(q): Query<MerchantFilter>,
) -> Result<Json<OperatorList>, ApiError> {
    let mchid = q.mchid.as_deref().filter(|m| !m.is_empty());
    Ok(Json(OperatorList {
        operators: state
            .store
            .operators(mchid)
            .await?
            .into_iter()
            .map(OperatorView::from)
            .collect(),
    }))
}

/// `POST /admin/operators`: an operator of a merchant, with its token (shown this once).
#[utoipa::path(post, path = "/admin/operators", tag = "admin", security(("admin_token" = [])),
    request_body = CreateOperator,
    responses((status = 201, body = CreatedOperator), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn create_operator(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateOperator>,
) -> Result<Response, ApiError> {
    let created = tenants::create_operator(&state.store, &body.mchid, &body.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedOperator {
            operator: OperatorView::from(created.operator),
            token: created.token.expose_secret().to_owned(),
        }),
    )
        .into_response())
}

/// `DELETE /admin/operators/{id}`: revokes an operator; its token is refused from now on.
#[utoipa::path(delete, path = "/admin/operators/{id}", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "The operator's id")),
    responses((status = 200, body = OperatorView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_operator(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OperatorView>, ApiError> {
    not_found_unless_id(&id, "no such operator")?;
    Ok(Json(OperatorView::from(
        tenants::revoke_operator(&state.store, &id).await?,
    )))
}

/// `GET /admin/whoami`: who the token is: the admin token, or an operator's token (then the
/// operator and its merchant).
#[utoipa::path(get, path = "/admin/whoami", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(principal: Principal) -> Json<WhoAmI> {
    Json(match principal {
        Principal::Admin => WhoAmI {
            kind: "admin".into(),
            mchid: None,
            operator_id: None,
        },
        Principal::Operator { mchid, id } => WhoAmI {
            kind: "operator".into(),
            mchid: Some(mchid),
            operator_id: Some(id),
        },
    })
}

/// `GET /admin/registry/version`: the registry's version, raised by every change.
#[utoipa::path(get, path = "/admin/registry/version", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = RegistryVersion), (status = 401, body = ErrorBody)))]
pub(crate) async fn registry_version(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<RegistryVersion>, ApiError> {
    Ok(Json(RegistryVersion {
        version: state.store.registry_version().await?,
    }))
}

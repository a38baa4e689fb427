//! `GET /openapi.json`: the API description, generated from the handlers' `#[utoipa::path]`
//! annotations and the `ToSchema` types they take and answer.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, metrics, mini, notify, payouts, push, tenants};
use crate::app::AppState;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "wxpay server", description = "The merchant payment server: the mini program's API, WeChat Pay's notifications, the back office."),
    paths(
        mini::login,
        mini::logout,
        mini::products,
        mini::create_order,
        mini::list_orders,
        mini::get_order,
        mini::payment,
        mini::close,
        mini::wxacode,
        mini::healthz,
        notify::v3_pay,
        notify::v3_refund,
        notify::v2_pay,
        notify::v2_refund,
        notify::v3_pay_default,
        notify::v3_refund_default,
        notify::v2_pay_default,
        notify::v2_refund_default,
        payouts::notify,
        payouts::user_transfers,
        payouts::confirm,
        push::verify,
        push::receive,
        push::list_alerts,
        push::acknowledge_alert,
        push::unsettled,
        admin::list_orders,
        admin::create_order,
        admin::order_detail,
        admin::create_refund,
        admin::create_shipment,
        admin::delivery_companies,
        admin::overdue,
        admin::refund,
        admin::products,
        admin::put_product,
        admin::reconciliation,
        admin::hourly,
        admin::webhooks,
        admin::revoke_sessions,
        admin::jobs,
        payouts::create,
        payouts::list,
        payouts::detail,
        payouts::cancel,
        payouts::limits,
        payouts::set_limits,
        tenants::list_merchants,
        tenants::create_merchant,
        tenants::get_merchant,
        tenants::update_merchant,
        tenants::list_sub_merchants,
        tenants::create_sub_merchant,
        tenants::update_sub_merchant,
        tenants::list_apps,
        tenants::create_app,
        tenants::get_app,
        tenants::update_app,
        tenants::list_operators,
        tenants::create_operator,
        tenants::revoke_operator,
        tenants::whoami,
        tenants::registry_version,
        metrics::scrape,
        openapi_json,
    ),
    components(schemas(admin::ErrorBody)),
    modifiers(&SecuritySchemes, &AdminOperationIds),
    tags(
        (name = "mini program", description = "For the mini program (Authorization: Bearer TOKEN from /api/login)"),
        (name = "notifications", description = "For WeChat Pay"),
        (name = "admin", description = "The merchant's back office (Authorization: Bearer WXPAY_ADMIN_TOKEN)"),
        (name = "operations", description = "Health, metrics, this description"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("admin_token", bearer());
        // A merchant's operator (POST /admin/operators): its merchant's orders and refunds only.
        components.add_security_scheme("operator_token", bearer());
        components.add_security_scheme("session_token", bearer());
    }
}

/// Operation ids default to the handler's name, and the back office's handlers share names with
/// the mini program's (`list_orders`, `create_order`, `products`); OpenAPI wants ids unique, so
/// the back office's take an `admin_` prefix.
struct AdminOperationIds;

impl Modify for AdminOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            if !path.starts_with("/admin/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                if let Some(id) = &mut operation.operation_id
                    && !id.starts_with("admin_")
                {
                    id.insert_str(0, "admin_");
                }
            }
        }
    }
}

/// The routes: `GET /openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This API's OpenAPI 3.1 description", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

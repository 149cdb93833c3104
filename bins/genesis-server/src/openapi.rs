//! The OpenAPI document, generated from the handlers' annotations (utoipa).

use axum::Json;
use utoipa::OpenApi;

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Genesis API",
        description = "Plan and run multi-agent work. See docs/API.md."
    ),
    paths(
        api::health,
        api::ready,
        api::metrics,
        api::create_task,
        api::list_tasks,
        api::get_task,
        api::cancel_task,
        api::events,
        api::agents,
        api::status
    ),
    components(schemas(
        api::CreateTask,
        api::Mode,
        api::ErrorBody,
        api::ErrorDetail,
        api::Accepted,
        api::Links,
        api::AgentView
    ))
)]
struct ApiDoc;

/// The OpenAPI document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

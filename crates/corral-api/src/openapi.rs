//! The API's OpenAPI 3 document, derived from the handlers' annotations and the types they take
//! and give (served at `/1.0/openapi.json`).

use corral_core::definition::NAME_PATTERN;
use serde_json::json;
use utoipa::OpenApi;

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "corral",
        description = "corral's instances, operations, events and metrics (docs/api.md)."
    ),
    paths(
        routes::server_info,
        routes::openapi_json,
        routes::instances::list,
        routes::instances::create,
        routes::instances::get,
        routes::instances::patch,
        routes::instances::replace,
        routes::instances::change_state,
        routes::instances::info,
        routes::instances::delete,
        routes::console::logs,
        routes::console::console,
        routes::exec::exec,
        routes::snapshots::list,
        routes::snapshots::create,
        routes::snapshots::restore,
        routes::snapshots::delete,
        routes::volumes::list,
        routes::volumes::create,
        routes::volumes::get,
        routes::volumes::resize,
        routes::volumes::delete,
        routes::images::list,
        routes::images::get,
        routes::images::delete,
        routes::images::upload,
        routes::images::export,
        routes::networks::list,
        routes::networks::create,
        routes::networks::get,
        routes::networks::delete,
        routes::certificates::list,
        routes::certificates::add,
        routes::certificates::issue_token,
        routes::certificates::enrol,
        routes::certificates::remove,
        routes::operations::list,
        routes::operations::get,
        routes::operations::cancel,
        routes::operations::wait,
        routes::metrics::metrics,
        routes::events::events,
    )
)]
pub struct ApiDoc;

/// The document as JSON, with what the derives cannot say: an instance name's pattern in
/// every path, and that a create names its instance by `name` or by its `file`.
pub fn document() -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if let Some(paths) = document["paths"].as_object_mut() {
        // Read with get_mut: indexing a missing key would add it as null.
        for operation in paths.values_mut().filter_map(|path| path.as_object_mut()) {
            for parameter in operation
                .values_mut()
                .filter_map(|method| method.get_mut("parameters")?.as_array_mut())
                .flatten()
                .filter(|parameter| parameter["in"] == "path" && parameter["name"] == "name")
            {
                parameter["schema"]["pattern"] = json!(NAME_PATTERN);
            }
        }
    }
    if let Some(create) = document.pointer_mut("/components/schemas/CreateRequest") {
        create["anyOf"] = json!([
            {"required": ["name"], "properties": {"name": {"type": "string"}}},
            {"required": ["file"], "properties": {"file": {"$ref": "#/components/schemas/DefinitionFile"}}},
        ]);
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_the_name_rule_everywhere() {
        let document = document();
        assert_eq!(
            document["components"]["schemas"]["CreateRequest"]["properties"]["name"]["pattern"],
            NAME_PATTERN,
            "the derive's literal is core's pattern"
        );
        let mut seen = 0;
        for (path, operations) in document["paths"].as_object().unwrap() {
            for operation in operations.as_object().unwrap().values() {
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["name"] == "name" {
                        assert_eq!(parameter["schema"]["pattern"], NAME_PATTERN, "{path}");
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(
            seen, 17,
            "an instance's GET, PATCH, PUT, DELETE, PUT .../state, .../info, .../logs, .../console, \
             .../exec; its snapshots' \
             GET, POST, restore and DELETE; a volume's GET, PUT and DELETE; a trusted client's \
             DELETE"
        );
        assert!(
            !document.to_string().contains("\"parameters\":null"),
            "no operation gained an empty parameter list"
        );
    }
}

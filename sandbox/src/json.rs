//! The services' JSON bodies: [`Json`] reads a request's body as
//! `axum::Json` does, rejections included, without its per-field path
//! tracking on a body that reads well.
//!
//! `axum::Json` deserializes every body through `serde_path_to_error`, so
//! that a refused body's message can name the field at fault. That
//! bookkeeping is paid on every request, though only a refused body uses
//! it: about 3 % of the mesh's CPU under `sandbox bench`. Here a body is
//! read plainly first; only one that does not read is read again the
//! framework's way, for its exact rejection.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A JSON body taken by a handler, or answered by one (as `axum::Json`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// Reads `req`'s JSON body with `parse`; a body `parse` does not take
/// (`None`), or a request that is not plainly `application/json`, is read
/// by `axum::Json`, which answers it as it always has (the same value, or
/// the same rejection).
pub(crate) async fn read_with<S, T>(
    req: Request,
    state: &S,
    parse: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<T, Response>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    // What the services and the bench send; anything else (a charset
    // parameter, `+json`, no content type) goes the framework's way.
    let plain_json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !plain_json {
        return axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| v)
            .map_err(IntoResponse::into_response);
    }
    let body = Bytes::from_request(req, state)
        .await
        .map_err(IntoResponse::into_response)?;
    match parse(&body) {
        Some(value) => Ok(value),
        None => axum::Json::<T>::from_bytes(&body)
            .map(|axum::Json(v)| v)
            .map_err(IntoResponse::into_response),
    }
}

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        read_with(req, state, |body| serde_json::from_slice(body).ok())
            .await
            .map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Visit {
        patient_id: String,
        lines: Vec<u32>,
    }

    async fn read(content_type: Option<&str>, body: &str) -> Result<Visit, StatusCode> {
        let mut req = Request::builder().method("POST").uri("/");
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let req = req
            .body(Body::from(body.to_string()))
            .map_err(|_| StatusCode::IM_A_TEAPOT)?;
        match Json::<Visit>::from_request(req, &()).await {
            Ok(Json(v)) => Ok(v),
            Err(r) => Err(r.status()),
        }
    }

    #[tokio::test]
    async fn bodies_are_taken_and_refused_as_axum_json_takes_and_refuses_them() {
        let good = r#"{"patient_id":"p-1","lines":[1,2]}"#;
        let expected = Visit {
            patient_id: "p-1".into(),
            lines: vec![1, 2],
        };
        assert_eq!(read(Some("application/json"), good).await, Ok(expected));
        let cases = [
            (Some("application/json"), good),
            (Some("application/json; charset=utf-8"), good),
            (Some("application/vnd.x+json"), good),
            (Some("text/plain"), good),
            (None, good),
            (Some("application/json"), r#"{"patient_id":"p-1"}"#),
            (
                Some("application/json"),
                r#"{"patient_id":"p-1","lines":["a"]}"#,
            ),
            (Some("application/json"), r#"{"patient_id":"#),
            (
                Some("application/json"),
                r#"{"patient_id":"p-1","lines":[]} x"#,
            ),
        ];
        for (content_type, body) in cases {
            let ours = read(content_type, body).await;
            let mut req = Request::builder().method("POST").uri("/");
            if let Some(t) = content_type {
                req = req.header("content-type", t);
            }
            let req = req.body(Body::from(body.to_string())).expect("a request");
            let theirs = match axum::Json::<Visit>::from_request(req, &()).await {
                Ok(axum::Json(v)) => Ok(v),
                Err(r) => Err(r.into_response().status()),
            };
            assert_eq!(ours, theirs, "{content_type:?} {body}");
        }
    }
}

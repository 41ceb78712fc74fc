//! `GET /`: the dashboard's overview for a signed-in browser (see [`crate::dashboard`]), else
//! the form to sign in with an API key's token.

use askama::Template;
use axum::{
    Extension,
    extract::State,
    response::{IntoResponse, Redirect, Response},
};

use offload_shared::settings::Scope;

use crate::{
    auth::Caller,
    dashboard::{self, Chrome},
    error::ApiError,
    state::AppState,
};

/// `GET /`: the overview, or without a session (or key) the sign-in form.
#[utoipa::path(get, path = "/", tag = "docs",
    responses((status = 200, description = "The dashboard's overview, or the form to sign in", content_type = "text/html")))]
pub async fn index(State(state): State<AppState>, caller: Option<Extension<Caller>>) -> Response {
    match caller {
        Some(Extension(caller)) if caller.allows(Scope::Read) => {
            dashboard::overview::page(&state, &caller).await
        }
        // A key that may submit but not read: its one page.
        Some(Extension(caller)) if caller.allows(Scope::Submit) => {
            Redirect::to("/ui/submit").into_response()
        }
        Some(Extension(caller)) => {
            dashboard::PageError(ApiError::InsufficientScope(Scope::Read), Some(caller))
                .into_response()
        }
        None => sign_in_page(None),
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn<'a> {
    chrome: Chrome,
    error: Option<&'a str>,
}

/// The sign-in form: paste an API key's token (`offload-api keys create`).
pub fn sign_in_page(error: Option<&str>) -> Response {
    dashboard::render(&SignIn {
        chrome: Chrome::new(None, ""),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sign_in_form_escapes_its_message() {
        let page = SignIn {
            chrome: Chrome::new(None, ""),
            error: Some("<script>\"x\"&'"),
        }
        .render()
        .expect("renders");
        assert!(
            page.contains("&#60;script&#62;&#34;x&#34;&#38;&#39;")
                || page.contains("&lt;script&gt;&quot;x&quot;&amp;&#39;"),
            "{page}"
        );
        assert!(page.contains("name=\"token\""));
    }
}

//! What the two web pages share: the school's local page (`baton ui`) and
//! the trust dashboard (`batond serve --http-listen`). Each keeps its own
//! sessions; both read a session cookie and answer refusals the same way.

use tonic::codegen::http::{HeaderMap, header};

/// The value of cookie `name` in the request's `Cookie` headers, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}

/// A page with a heading `title` and one paragraph `why` (trusted HTML:
/// the callers' own fixed sentences), for refusals and short answers.
pub fn plain_page(title: &str, why: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en-GB\"><meta charset=\"utf-8\"><title>{title}</title>\
         <main><h1>{title}</h1><p>{why}</p></main></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; session=abc".parse().unwrap());
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, "session").as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, "sess"), None);
    }
}

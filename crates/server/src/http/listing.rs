//! The query parameters every list endpoint takes, as RabbitMQ's management plugin reads them:
//! `sort`, `sort_reverse`, `columns`, and pagination (`page`, `page_size`, `name`), which
//! turns the answer into a page object. Works on JSON values, so each resource only builds
//! its items.

use std::cmp::Ordering;

use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 500;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    columns: Option<String>,
    sort: Option<String>,
    sort_reverse: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
}

impl ListQuery {
    /// The query without its pagination parameters, for the listings RabbitMQ never pages
    /// (it answers those with the whole array whatever `page` says).
    pub(crate) fn without_pagination(self) -> ListQuery {
        ListQuery {
            page: None,
            page_size: None,
            name: None,
            ..self
        }
    }
}

/// Sorts (by `vhost` then `name` unless asked otherwise), pages and trims `items`.
pub(crate) fn reply_list(mut items: Vec<Value>, query: &ListQuery) -> ApiResult<Json<Value>> {
    match query.sort.as_deref().filter(|s| !s.is_empty()) {
        Some(key) => items.sort_by(|a, b| compare(lookup(a, key), lookup(b, key))),
        None => items.sort_by(|a, b| {
            compare(lookup(a, "vhost"), lookup(b, "vhost"))
                .then_with(|| compare(lookup(a, "name"), lookup(b, "name")))
        }),
    }
    if query.sort_reverse.as_deref() == Some("true") {
        items.reverse();
    }
    let Some(page) = query.page.as_deref() else {
        return Ok(Json(Value::Array(trim_all(items, query))));
    };
    let page: usize = page
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| ApiError::bad_request("Pagination parameters are invalid"))?;
    let page_size: usize = match query.page_size.as_deref() {
        None => DEFAULT_PAGE_SIZE,
        Some(size) => size
            .parse()
            .ok()
            .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
            .ok_or_else(|| ApiError::bad_request("Pagination parameters are invalid"))?,
    };
    let total_count = items.len();
    if let Some(name) = query.name.as_deref().filter(|n| !n.is_empty()) {
        items.retain(|item| {
            lookup(item, "name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.contains(name))
        });
    }
    let filtered_count = items.len();
    let page_count = filtered_count.div_ceil(page_size).max(1);
    let start = (page - 1) * page_size;
    let page_items: Vec<Value> = items.into_iter().skip(start).take(page_size).collect();
    Ok(Json(json!({
        "filtered_count": filtered_count,
        "item_count": page_items.len(),
        "items": trim_all(page_items, query),
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total_count,
    })))
}

/// One object, trimmed to `columns` if asked.
pub(crate) fn reply_one(item: Value, query: &ListQuery) -> Json<Value> {
    match columns(query) {
        Some(columns) => Json(trim(&item, &columns)),
        None => Json(item),
    }
}

fn columns(query: &ListQuery) -> Option<Vec<&str>> {
    let columns = query.columns.as_deref()?;
    Some(
        columns
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect(),
    )
}

fn trim_all(items: Vec<Value>, query: &ListQuery) -> Vec<Value> {
    match columns(query) {
        Some(columns) => items.iter().map(|item| trim(item, &columns)).collect(),
        None => items,
    }
}

/// Keeps only the named (dotted) columns; missing ones are left out, as RabbitMQ does.
fn trim(item: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for column in columns {
        let Some(value) = lookup(item, column) else {
            continue;
        };
        let mut parts = column.split('.').peekable();
        let mut target = &mut out;
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                target.insert(part.to_string(), value.clone());
                break;
            }
            let entry = target
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(map) => target = map,
                _ => break,
            }
        }
    }
    Value::Object(out)
}

fn lookup<'a>(item: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(item, |value, part| value.get(part))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(text: &str) -> ListQuery {
        let mut q = ListQuery::default();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            let v = Some(v.to_string());
            match k {
                "columns" => q.columns = v,
                "sort" => q.sort = v,
                "sort_reverse" => q.sort_reverse = v,
                "page" => q.page = v,
                "page_size" => q.page_size = v,
                "name" => q.name = v,
                _ => panic!("{k}"),
            }
        }
        q
    }

    fn items() -> Vec<Value> {
        vec![
            json!({"vhost": "/", "name": "b", "messages": 5, "totals": {"x": 1}}),
            json!({"vhost": "/", "name": "a", "messages": 10}),
            json!({"vhost": "v", "name": "a", "messages": 1}),
        ]
    }

    #[test]
    fn sorted_by_vhost_and_name_unless_asked() {
        let Json(out) = reply_list(items(), &query("columns=name")).unwrap();
        assert_eq!(out, json!([{"name": "a"}, {"name": "b"}, {"name": "a"}]));
        let Json(out) = reply_list(
            items(),
            &query("sort=messages&sort_reverse=true&columns=messages"),
        )
        .unwrap();
        assert_eq!(
            out,
            json!([{"messages": 10}, {"messages": 5}, {"messages": 1}])
        );
    }

    #[test]
    fn dotted_columns_keep_their_nesting() {
        let Json(out) = reply_list(items(), &query("columns=name,totals.x")).unwrap();
        assert_eq!(out[1], json!({"name": "b", "totals": {"x": 1}}));
    }

    #[test]
    fn pages_count_what_the_name_filter_leaves() {
        let Json(out) = reply_list(items(), &query("page=1&page_size=1&name=a")).unwrap();
        assert_eq!(out["total_count"], 3);
        assert_eq!(out["filtered_count"], 2);
        assert_eq!(out["page_count"], 2);
        assert_eq!(out["items"][0]["name"], "a");
        assert!(reply_list(items(), &query("page=0")).is_err());
    }
}

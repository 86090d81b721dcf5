//! Uploads: image files on their way in (issue 9 point 3).

use super::catalog;
use super::codec::{i, json, to_json, u, uuid};
use crate::store::*;
use cm_api::upload::UploadState;
use rusqlite::{params, Connection, OptionalExtension, Row};

const COLS: &str = "id, state, size, sha256, url, error, created_at, updated_at";

type Raw = (
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn row(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn decode(raw: Raw) -> Result<UploadRow> {
    let (id, state, size, sha256, url, error, created_at, updated_at) = raw;
    Ok(UploadRow {
        id: uuid(&id)?,
        state: UploadState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("upload state '{state}'")))?,
        size: size.map(u),
        sha256,
        url,
        error: error.map(|e| json("upload error", &e)).transpose()?,
        created_at,
        updated_at,
    })
}

pub fn insert(c: &Connection, up: &UploadRow) -> Result<()> {
    c.execute(
        &format!("INSERT INTO uploads ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            up.id.to_string(),
            up.state.as_str(),
            up.size.map(i),
            up.sha256,
            up.url,
            up.error.as_ref().map(to_json).transpose()?,
            up.created_at,
            up.updated_at
        ],
    )?;
    Ok(())
}

pub fn get(c: &Connection, id: Uuid) -> Result<UploadRow> {
    let raw = c
        .query_row(
            &format!("SELECT {COLS} FROM uploads WHERE id = ?1"),
            [id.to_string()],
            row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "upload",
            name: id.to_string(),
        })?;
    decode(raw)
}

pub fn list(c: &Connection) -> Result<Vec<UploadRow>> {
    let mut stmt = c.prepare(&format!("SELECT {COLS} FROM uploads ORDER BY created_at"))?;
    let rows = stmt.query_map([], row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode(r?)?);
    }
    Ok(out)
}

pub fn update(c: &Connection, up: &UploadRow) -> Result<()> {
    let n = c.execute(
        "UPDATE uploads SET state = ?2, size = ?3, sha256 = ?4, error = ?5, updated_at = ?6 WHERE id = ?1",
        params![
            up.id.to_string(),
            up.state.as_str(),
            up.size.map(i),
            up.sha256,
            up.error.as_ref().map(to_json).transpose()?,
            up.updated_at
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound {
            what: "upload",
            name: up.id.to_string(),
        });
    }
    Ok(())
}

pub fn delete(c: &Connection, id: Uuid) -> Result<()> {
    c.execute("DELETE FROM uploads WHERE id = ?1", [id.to_string()])?;
    Ok(())
}

pub fn insert_image_from(c: &Connection, image: &Image, uploads: &[Uuid]) -> Result<()> {
    for id in uploads {
        let n = c.execute(
            "DELETE FROM uploads WHERE id = ?1 AND state = 'complete'",
            [id.to_string()],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "upload {id} is gone or not complete (another image took it?)"
            )));
        }
    }
    catalog::insert_image(c, image)
}

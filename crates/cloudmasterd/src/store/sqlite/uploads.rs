//! Uploads: image files on their way in (issue 9 point 3).

use super::catalog;
use super::codec::{self, columns, i, json, text, to_json, u, uuid, FromRow};
use crate::store::*;
use cm_api::upload::UploadState;
use rusqlite::{params, Connection, Row};

const COLS: &str = "id, state, size, sha256, url, error, created_at, updated_at";

columns!(Cols {
    id,
    state,
    size,
    sha256,
    url,
    error,
    created_at,
    updated_at
});

impl FromRow for UploadRow {
    type Cols = Cols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Cols> {
        Cols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &Cols) -> Result<UploadRow> {
        let state = text(r, c.state)?;
        Ok(UploadRow {
            id: uuid(text(r, c.id)?)?,
            state: UploadState::parse(state)
                .ok_or_else(|| StoreError::Corrupt(format!("upload state '{state}'")))?,
            size: r.get::<_, Option<i64>>(c.size)?.map(u),
            sha256: r.get(c.sha256)?,
            url: r.get(c.url)?,
            error: r
                .get::<_, Option<String>>(c.error)?
                .map(|e| json("upload error", &e))
                .transpose()?,
            created_at: r.get(c.created_at)?,
            updated_at: r.get(c.updated_at)?,
        })
    }
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
    codec::first(
        c,
        &format!("SELECT {COLS} FROM uploads WHERE id = ?1"),
        [id.to_string()],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "upload",
        name: id.to_string(),
    })
}

pub fn list(c: &Connection) -> Result<Vec<UploadRow>> {
    codec::all(
        c,
        &format!("SELECT {COLS} FROM uploads ORDER BY created_at"),
        [],
    )
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

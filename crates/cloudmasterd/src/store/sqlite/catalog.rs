//! Images and flavors.

use super::codec::{json, to_json, u, uuid};
use crate::store::*;
use cm_api::image::ImageKind;
use rusqlite::{params, Connection, OptionalExtension, Row};

const IMAGE_COLS: &str = "id, name, kind, files, cmdline, created_at";

fn image_row(
    r: &Row<'_>,
) -> rusqlite::Result<(String, String, String, String, Option<String>, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn image_decode(raw: (String, String, String, String, Option<String>, i64)) -> Result<Image> {
    let (id, name, kind, files, cmdline, created) = raw;
    Ok(Image {
        id: uuid(&id)?,
        name,
        kind: match kind.as_str() {
            "kernel" => ImageKind::Kernel,
            "disk" => ImageKind::Disk,
            other => return Err(StoreError::Corrupt(format!("image kind '{other}'"))),
        },
        files: json("image files", &files)?,
        cmdline,
        created_at: to_ts(created),
    })
}

pub fn insert_image(c: &Connection, image: &Image) -> Result<()> {
    let res = c.execute(
        &format!("INSERT INTO images ({IMAGE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            image.id.to_string(),
            image.name,
            image.kind.as_str(),
            to_json(&image.files)?,
            image.cmdline,
            (image.created_at.unix_timestamp_nanos() / 1_000_000) as i64
        ],
    );
    match res {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::AlreadyExists(format!(
                "image '{}' exists already",
                image.name
            )))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

pub fn list_images(c: &Connection) -> Result<Vec<Image>> {
    let mut stmt = c.prepare(&format!("SELECT {IMAGE_COLS} FROM images ORDER BY name"))?;
    let rows = stmt.query_map([], image_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(image_decode(r?)?);
    }
    Ok(out)
}

pub fn get_image(c: &Connection, name_or_id: &str) -> Result<Image> {
    let raw = c
        .query_row(
            &format!("SELECT {IMAGE_COLS} FROM images WHERE name = ?1 OR id = ?1"),
            [name_or_id],
            image_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "image",
            name: name_or_id.to_string(),
        })?;
    image_decode(raw)
}

pub fn delete_image(c: &Connection, name: &str) -> Result<Image> {
    let image = get_image(c, name)?;
    let users: Vec<String> = {
        let mut stmt =
            c.prepare("SELECT name FROM instances WHERE image_id = ?1 ORDER BY name LIMIT 5")?;
        let rows = stmt.query_map([image.id.to_string()], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    if !users.is_empty() {
        return Err(StoreError::Conflict(format!(
            "image '{}' is used by instances: {}",
            image.name,
            users.join(", ")
        )));
    }
    c.execute("DELETE FROM images WHERE id = ?1", [image.id.to_string()])?;
    Ok(image)
}

fn flavor_row(r: &Row<'_>) -> rusqlite::Result<Flavor> {
    Ok(Flavor {
        name: r.get(0)?,
        memory_mib: u(r.get(1)?),
        vcpus: u(r.get(2)?) as u32,
        disk_gib: u(r.get(3)?),
        builtin: r.get(4)?,
    })
}

pub fn insert_flavor_if_missing(c: &Connection, f: &Flavor) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO flavors (name, memory_mib, vcpus, disk_gib, builtin) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![f.name, f.memory_mib as i64, f.vcpus, f.disk_gib as i64, f.builtin],
    )?;
    Ok(())
}

pub fn insert_flavor(c: &Connection, f: &Flavor) -> Result<()> {
    let res = c.execute(
        "INSERT INTO flavors (name, memory_mib, vcpus, disk_gib, builtin) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![f.name, f.memory_mib as i64, f.vcpus, f.disk_gib as i64, f.builtin],
    );
    match res {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::AlreadyExists(format!(
                "flavor '{}' exists already",
                f.name
            )))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

pub fn list_flavors(c: &Connection) -> Result<Vec<Flavor>> {
    let mut stmt = c.prepare(
        "SELECT name, memory_mib, vcpus, disk_gib, builtin FROM flavors ORDER BY memory_mib, name",
    )?;
    let rows = stmt.query_map([], flavor_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn get_flavor(c: &Connection, name: &str) -> Result<Flavor> {
    c.query_row(
        "SELECT name, memory_mib, vcpus, disk_gib, builtin FROM flavors WHERE name = ?1",
        [name],
        flavor_row,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound {
        what: "flavor",
        name: name.to_string(),
    })
}

pub fn delete_flavor(c: &Connection, name: &str) -> Result<Flavor> {
    let f = get_flavor(c, name)?;
    if f.builtin {
        return Err(StoreError::Conflict(format!("flavor '{name}' is built in")));
    }
    c.execute("DELETE FROM flavors WHERE name = ?1", [name])?;
    Ok(f)
}

//! Images and flavors.

use super::codec::{self, columns, json, text, to_json, u, uuid, FromRow};
use crate::store::*;
use cm_api::image::ImageKind;
use rusqlite::{params, Connection, OptionalExtension, Row};

const IMAGE_COLS: &str = "id, name, kind, files, cmdline, created_at";

columns!(ImageCols {
    id,
    name,
    kind,
    files,
    cmdline,
    created_at
});

impl FromRow for Image {
    type Cols = ImageCols;
    fn cols(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<ImageCols> {
        ImageCols::of(stmt)
    }
    fn from_row(r: &Row<'_>, c: &ImageCols) -> Result<Image> {
        Ok(Image {
            id: uuid(text(r, c.id)?)?,
            name: r.get(c.name)?,
            kind: match text(r, c.kind)? {
                "kernel" => ImageKind::Kernel,
                "disk" => ImageKind::Disk,
                other => return Err(StoreError::Corrupt(format!("image kind '{other}'"))),
            },
            files: json("image files", text(r, c.files)?)?,
            cmdline: r.get(c.cmdline)?,
            created_at: to_ts(r.get(c.created_at)?),
        })
    }
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
            cm_api::time::timestamp_ms(image.created_at)
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
    codec::all(
        c,
        &format!("SELECT {IMAGE_COLS} FROM images ORDER BY name"),
        [],
    )
}

pub fn get_image(c: &Connection, name_or_id: &str) -> Result<Image> {
    codec::first(
        c,
        &format!("SELECT {IMAGE_COLS} FROM images WHERE name = ?1 OR id = ?1"),
        [name_or_id],
    )?
    .ok_or_else(|| StoreError::NotFound {
        what: "image",
        name: name_or_id.to_string(),
    })
}

pub fn delete_image(c: &Connection, name: &str) -> Result<Image> {
    let image = get_image(c, name)?;
    let volumes = super::roots::volumes_of_image(c, &image.id.to_string())?;
    if !volumes.is_empty() {
        return Err(StoreError::Refused {
            message: format!(
                "image '{}' is the origin of volumes: {} (their files are overlays on it)",
                image.name,
                volumes.join(", ")
            ),
            field: "name",
        });
    }
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
        name: r.get("name")?,
        memory_mib: u(r.get("memory_mib")?),
        vcpus: u32::try_from(u(r.get("vcpus")?)).unwrap_or(u32::MAX),
        disk_gib: u(r.get("disk_gib")?),
        builtin: r.get("builtin")?,
    })
}

pub fn insert_flavor_if_missing(c: &Connection, f: &Flavor) -> Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO flavors (name, memory_mib, vcpus, disk_gib, builtin) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![f.name, codec::i(f.memory_mib), f.vcpus, codec::i(f.disk_gib), f.builtin],
    )?;
    Ok(())
}

pub fn insert_flavor(c: &Connection, f: &Flavor) -> Result<()> {
    let res = c.execute(
        "INSERT INTO flavors (name, memory_mib, vcpus, disk_gib, builtin) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![f.name, codec::i(f.memory_mib), f.vcpus, codec::i(f.disk_gib), f.builtin],
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

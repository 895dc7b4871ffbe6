//! Rewrite (BGREWRITEAOF, auto rewrite, enable at runtime, full resync):
//! a new incr file opened with the image, then the image installed as the
//! new base and the files it replaces removed.

use super::*;

impl Aof {
    /// A rewrite's first step, taken under the keyspace lock together with
    /// the image: appends from now on go to a new incr file, so base + that
    /// file is the whole dataset. `restart`: the old files are dropped once
    /// the new base is in (enable, full resync).
    pub fn begin_rewrite(&self, restart: bool) -> Result<ManifestFile, AofError> {
        let _w = self.writer();
        let mut g = self.state();
        let Some(a) = g.as_mut() else {
            return Err(AofError::Base("the AOF is off".into()));
        };
        let dir = a.dir.clone();
        let incr = a.open_incr().map_err(io_err(&dir))?;
        if restart {
            a.restart_pending = true;
        }
        if !a.restart_pending {
            // The new incr joins the chain now, so its writes are never
            // orphaned if this rewrite fails.
            a.manifest.incrs.push(incr.clone());
            a.save_manifest().map_err(io_err(&dir))?;
        }
        Ok(incr)
    }

    /// Where a rewrite writes its image before `install_base`.
    pub fn rewrite_temp_path(&self) -> Option<PathBuf> {
        self.state().as_ref().map(|a| {
            a.dir
                .join(format!("temp-rewriteaof-bg-{}.aof", std::process::id()))
        })
    }

    /// A rewrite's last step: the image written to `tmp` (`size` bytes)
    /// becomes the base, the incr files written since `new_incr` began are
    /// kept, the manifest is replaced atomically, older files deleted.
    pub fn install_base(
        &self,
        tmp: &Path,
        size: u64,
        new_incr: &ManifestFile,
    ) -> Result<(), AofError> {
        let mut g = self.state();
        let Some(a) = g.as_mut() else {
            let _ = std::fs::remove_file(tmp);
            return Err(AofError::Base("the AOF was turned off".into()));
        };
        let dir = a.dir.clone();
        let seq = a.manifest.next_base_seq();
        let base_name = format!("{}.{seq}.base.rdb", a.name);
        std::fs::rename(tmp, a.path(&base_name)).map_err(io_err(tmp))?;
        let old = a.manifest.clone();
        // The incr files written since the image: the one opened with it,
        // any opened later, and the one being appended to.
        let mut incrs: Vec<ManifestFile> = old
            .incrs
            .iter()
            .filter(|f| f.seq >= new_incr.seq)
            .cloned()
            .collect();
        for f in [Some(new_incr.clone()), a.current.clone()]
            .into_iter()
            .flatten()
        {
            if !incrs.iter().any(|x| x.seq == f.seq) {
                incrs.push(f);
            }
        }
        incrs.sort_by_key(|f| f.seq);
        a.manifest = Manifest {
            base: Some(ManifestFile {
                name: base_name.clone(),
                seq,
                kind: FileKind::Base,
            }),
            incrs,
            history: Vec::new(),
        };
        a.base_size = size;
        a.restart_pending = false;
        a.save_manifest().map_err(io_err(&dir))?;
        tracing::info!(file = %base_name, "Successfully renamed the temporary AOF base file");
        let keep: Vec<String> = a
            .manifest
            .incrs
            .iter()
            .map(|f| f.name.clone())
            .chain(std::iter::once(base_name))
            .collect();
        let dir_files = std::fs::read_dir(&a.dir).map_err(io_err(&dir))?;
        let prefix = format!("{}.", a.name);
        for e in dir_files.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(&prefix)
                && (name.ends_with(".incr.aof") || name.contains(".base."));
            if ours && !keep.contains(&name) {
                tracing::info!(file = %name, "Removing the history file");
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

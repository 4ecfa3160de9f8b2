"""Deterministic files through the Hadoop FileSystem API (any URI Spark can write).

Spark writes the lines partitioned by their target file into a temporary folder: all lines of
one file are in one task (repartition by file) and sorted there, so each partition folder holds
exactly one part file, which is then renamed to its final, deterministic name.
"""

from __future__ import annotations

from urllib.parse import unquote

from pyspark.sql import DataFrame, SparkSession

from crm_spark.errors import SourceError


class OutputFs:
    """The output root on its Hadoop file system (the raw one for local paths: no ``.crc`` files)."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        jvm = spark.sparkContext._jvm  # noqa: SLF001 - py4j gateway is the only way to reach Hadoop FS
        self._jvm = jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        conf = spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001
        root_path = self._Path(root.rstrip("/") or "/")
        try:
            fs = root_path.getFileSystem(conf)
        except Exception as exc:  # py4j wraps the Java exception
            raise SourceError(f"cannot open output location {root}: {_java_message(exc)}") from None
        checksum = jvm.java.lang.Class.forName("org.apache.hadoop.fs.ChecksumFileSystem")
        self._fs = fs.getRawFileSystem() if checksum.isInstance(fs) else fs
        self.root = str(fs.makeQualified(root_path).toString())

    def path(self, rel: str = ""):  # noqa: ANN201 - a py4j Path
        return self._Path(self.root if not rel else f"{self.root}/{rel}")

    def uri(self, rel: str = "") -> str:
        return str(self.path(rel).toString())

    def exists(self, rel: str) -> bool:
        return bool(self._fs.exists(self.path(rel)))

    def is_empty_or_missing(self, rel: str) -> bool:
        p = self.path(rel)
        if not self._fs.exists(p):
            return True
        return self._fs.getFileStatus(p).isDirectory() and len(self._fs.listStatus(p)) == 0

    def read_text(self, rel: str) -> str:
        stream = self._fs.open(self.path(rel))
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def delete(self, rel: str) -> None:
        p = self.path(rel)
        if self._fs.exists(p):
            self._fs.delete(p, True)

    def write_text(self, rel: str, text: str) -> None:
        stream = self._fs.create(self.path(rel), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def concat(self, rel: str, header: str, parts: list[str]) -> None:
        """``rel`` = header line + the bytes of each existing part (copied inside the JVM)."""
        out = self._fs.create(self.path(rel), True)
        io_utils = self._jvm.org.apache.hadoop.io.IOUtils
        try:
            out.write(bytearray((header + "\n").encode("utf-8")))
            for part in parts:
                p = self.path(part)
                if not self._fs.exists(p):
                    continue
                stream = self._fs.open(p)
                try:
                    io_utils.copyBytes(stream, out, 1 << 16, False)
                finally:
                    stream.close()
        finally:
            out.close()

    def list_files(self, rel: str) -> list[str]:
        p = self.path(rel)
        if not self._fs.exists(p):
            return []
        return sorted(str(s.getPath().getName()) for s in self._fs.listStatus(p) if s.isFile())

    def publish(self, tmp_rel: str) -> list[str]:
        """Move each ``file=<rel path>/part-*`` under ``tmp_rel`` to ``<root>/<rel path>``."""
        moved: list[str] = []
        for status in self._fs.listStatus(self.path(tmp_rel)):
            name = str(status.getPath().getName())
            if not status.isDirectory() or not name.startswith("file="):
                continue
            target = unquote(name[len("file="):])
            parts = [s for s in self._fs.listStatus(status.getPath())
                     if s.isFile() and not str(s.getPath().getName()).startswith((".", "_"))]
            if len(parts) != 1:
                raise RuntimeError(f"expected one part file for {target}, found {len(parts)}")
            dst = self.path(target)
            self._fs.mkdirs(dst.getParent())
            if self._fs.exists(dst):
                self._fs.delete(dst, False)
            if not self._fs.rename(parts[0].getPath(), dst):
                raise SourceError(f"cannot move a generated file to {dst.toString()}")
            moved.append(target)
        self.delete(tmp_rel)
        return sorted(moved)


def write_lines(fs: OutputFs, lines: DataFrame, *, tmp_rel: str, partitions: int) -> list[str]:
    """Write ``(file, hdr, t, k, v, line)`` rows: one file per distinct ``file``, lines sorted."""
    (
        lines.repartition(partitions, "file")
        .sortWithinPartitions("file", "hdr", "t", "k", "v", "line")
        .select("file", "line")
        .write.mode("overwrite")
        .partitionBy("file")
        .option("compression", "none")
        .text(fs.uri(tmp_rel))
    )
    return fs.publish(tmp_rel)


def _java_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

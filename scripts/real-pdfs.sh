#!/usr/bin/env bash
# Ingests PDFs of many producers from Debian documentation packages with the default (trained)
# tokenizer at --threads 1 and 2, each run under a time limit, and prints the producers met and
# each run's tally. A check of "ingest never hangs" on files nobody here wrote; needs apt-get
# (Debian), pdfinfo (poppler-utils) and a release build.
# Usage: scripts/real-pdfs.sh DIR [LIMIT_SECONDS]    (DIR is made; the PDFs land in DIR/pdf)
set -euo pipefail
dir=${1:?usage: scripts/real-pdfs.sh DIR [LIMIT_SECONDS]}
limit=${2:-900}
mamba=$(cd "$(dirname "$0")/.." && pwd)/target/release/mamba
[ -x "$mamba" ] || { echo "build first: cargo build --release" >&2; exit 1; }
# DocBook/dblatex (pdfTeX, xdvipdfmx), ReportLab, LilyPond (Ghostscript), texinfo and LaTeX
# (pdfTeX), a Japanese manual, an old pdfTeX 0.13 file.
packages=(docbook-xsl-doc-pdf python-reportlab-doc gri-pdf-doc auto-multiple-choice-doc-pdf
  camlidl-doc r-doc-pdf ghostscript-doc lilypond-doc-pdf-ca)
mkdir -p "$dir/debs" "$dir/pdf"
(cd "$dir/debs" && { apt-get download -qq "${packages[@]}" 2>/dev/null ||
  { apt-get update -qq && apt-get download -qq "${packages[@]}"; }; })
for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/x"; done
n=0
while IFS= read -r f; do
  n=$((n + 1)); b=$(basename "$f")
  case $f in *.gz) gunzip -c "$f" >"$dir/pdf/$n-${b%.gz}" ;; *) cp "$f" "$dir/pdf/$n-$b" ;; esac
done < <(find "$dir/x" \( -name '*.pdf' -o -name '*.pdf.gz' \) | sort)
echo "$(ls "$dir/pdf" | wc -l) PDFs, $(du -sh "$dir/pdf" | cut -f1); producers:"
for f in "$dir"/pdf/*.pdf; do pdfinfo "$f" 2>/dev/null | sed -n 's/^Producer: *//p'; done | sort | uniq -c
for threads in 1 2; do
  out="$dir/out-$threads"
  SECONDS=0
  if timeout "$limit" "$mamba" ingest --quiet "$dir/pdf" "$out" --threads "$threads" >"$dir/run-$threads.log" 2>&1; then
    status=finished
  else
    status="FAILED or HUNG (exit $?)"
  fi
  echo "--threads $threads: $status in $SECONDS s: $(head -1 "$dir/run-$threads.log")"
  [ -f "$out/report.jsonl" ] && sed 's/^/    /' "$out/report.jsonl"
done

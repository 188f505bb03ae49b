// tus-js-client, unchanged, uploading one file to the gateway (tests/it/tus.rs).
//
//   node upload.js <endpoint> <file> <url-storage-file> <abort-after-bytes> [x-rh-identity]
//
// Uploads <file> in 1 MiB PATCHes, with its upload URL kept in <url-storage-file>
// (tus-js-client's FileUrlStorage). With <abort-after-bytes> > 0 it aborts the upload
// once that many bytes were sent. A run that finds the file's URL in the storage
// resumes from it. Prints one JSON line: {"url", "done", "aborted", "resumedFrom",
// "firstOffset"}; exits 1 on an error. tus-js-client resolves with CommonJS `require`
// from NODE_PATH (scripts/tools.sh tus-js installs it outside the clone).
'use strict';
const fs = require('fs');
const path = require('path');
const tus = require('tus-js-client');

const [endpoint, file, store, abortAfter, identity] = process.argv.slice(2);
const abortAt = Number(abortAfter || 0);
const headers = identity ? { 'x-rh-identity': identity } : {};
let firstOffset = null;
let aborted = false;
let resumedFrom = null;

const print = (extra) => {
  process.stdout.write(JSON.stringify({ url: upload.url, resumedFrom, firstOffset, aborted, ...extra }) + '\n');
};

const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  chunkSize: 1024 * 1024,
  metadata: { filetype: 'application/vnd.redhat.advisor.tusjs+tgz', filename: path.basename(file) },
  headers,
  urlStorage: new tus.FileUrlStorage(store),
  removeFingerprintOnSuccess: false,
  retryDelays: [0, 500, 1000, 2000],
  onBeforeRequest(req) {
    if (req.getMethod() === 'PATCH' && firstOffset === null) {
      firstOffset = Number(req.getHeader('Upload-Offset'));
    }
  },
  onProgress(sent) {
    if (abortAt > 0 && !aborted && sent >= abortAt) {
      aborted = true;
      upload.abort().then(() => {
        print({ done: false });
        process.exit(0);
      });
    }
  },
  onSuccess() {
    print({ done: true });
    process.exit(0);
  },
  onError(e) {
    process.stderr.write(`tus-js-client: ${e}\n`);
    process.exit(1);
  },
});

upload.findPreviousUploads().then((previous) => {
  if (previous.length > 0) {
    resumedFrom = previous[0].uploadUrl;
    upload.resumeFromPreviousUpload(previous[0]);
  }
  upload.start();
}, (e) => {
  process.stderr.write(`tus-js-client: ${e}\n`);
  process.exit(1);
});

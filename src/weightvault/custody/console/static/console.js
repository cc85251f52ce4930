// weightvault approver console: the WebAuthn steps of sign-in, registration and decisions.
// Loaded from this origin only (the Content-Security-Policy allows no inline script).
"use strict";

const b64url = {
  decode(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(bytes, (c) => c.charCodeAt(0)).buffer;
  },
  encode(buffer) {
    let text = "";
    for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

function say(text, isError) {
  const status = document.getElementById("status");
  if (!status) return;
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
  status.setAttribute("role", isError ? "alert" : "status");
}

async function post(url, csrf, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  let data = {};
  try {
    data = await response.json();
  } catch (_) {
    data = { error: `unexpected answer (${response.status})` };
  }
  if (!response.ok) throw new Error(data.error || `refused (${response.status})`);
  return data;
}

function descriptors(list) {
  return (list || []).map((c) => ({ ...c, id: b64url.decode(c.id) }));
}

function credentialJSON(credential) {
  const r = credential.response;
  const response = { clientDataJSON: b64url.encode(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = b64url.encode(r.attestationObject);
    if (r.getTransports) response.transports = r.getTransports();
  } else {
    response.authenticatorData = b64url.encode(r.authenticatorData);
    response.signature = b64url.encode(r.signature);
    if (r.userHandle) response.userHandle = b64url.encode(r.userHandle);
  }
  return JSON.stringify({
    id: credential.id,
    rawId: b64url.encode(credential.rawId),
    type: credential.type,
    response,
    clientExtensionResults: credential.getClientExtensionResults(),
    authenticatorAttachment: credential.authenticatorAttachment || undefined,
  });
}

async function assertion(options) {
  const publicKey = {
    ...options,
    challenge: b64url.decode(options.challenge),
    allowCredentials: descriptors(options.allowCredentials),
  };
  return navigator.credentials.get({ publicKey });
}

async function signIn(form, csrf) {
  say("Waiting for your passkey…");
  const options = await post("/console/login/options", csrf, { name: form.elements.name.value });
  const credential = await assertion(options);
  const done = await post("/console/login", csrf, { credential: credentialJSON(credential) });
  window.location.assign(done.next);
}

async function register(form, csrf) {
  const code = form.elements.code.value;
  say("Follow your browser's prompt to create the passkey…");
  const options = await post("/console/register/options", csrf, { code });
  const publicKey = {
    ...options,
    challenge: b64url.decode(options.challenge),
    user: { ...options.user, id: b64url.decode(options.user.id) },
    excludeCredentials: descriptors(options.excludeCredentials),
  };
  const credential = await navigator.credentials.create({ publicKey });
  const done = await post("/console/register", csrf, { code, credential: credentialJSON(credential) });
  say(`Passkey registered for ${done.principal}. You can sign in now.`);
  window.location.assign(done.next);
}

async function decide(form, csrf) {
  // data-base: the request's or the job's page (/console/requests/ID, /console/jobs/ID).
  const base = form.dataset.base;
  const decision = form.dataset.decision;
  const reason = form.elements.reason ? form.elements.reason.value : "";
  say(`Sign the ${decision === "approve" ? "approval" : "denial"} with your passkey…`);
  const options = await post(`${base}/options`, csrf, {
    decision,
    reason,
    digest: form.dataset.digest,
  });
  const credential = await assertion(options);
  const done = await post(`${base}/decision`, csrf, {
    credential: credentialJSON(credential),
  });
  say(`Recorded: now ${done.status}.`);
  window.location.assign(done.next);
}

const steps = { login: signIn, register, decide };

document.addEventListener("submit", (event) => {
  const form = event.target;
  const step = steps[form.dataset.step];
  if (!step) return;
  event.preventDefault();
  if (!window.PublicKeyCredential) {
    say("This browser does not support passkeys.", true);
    return;
  }
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  step(form, form.elements.csrf.value)
    .catch((error) => say(error.message || String(error), true))
    .finally(() => buttons.forEach((b) => (b.disabled = false)));
});

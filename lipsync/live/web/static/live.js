// The Live tab: a WebRTC connection to the app's live routes (lipsync/live/web).
// Loaded as a module by the tab's gr.HTML; mount(root, prefix) wires one tab.

const readAsDataURL = (file) => new Promise((ok, bad) => {
  const r = new FileReader();
  r.onload = () => ok(r.result);
  r.onerror = () => bad(r.error);
  r.readAsDataURL(file);
});

const gathered = (pc) => new Promise((ok) => {
  if (pc.iceGatheringState === "complete") return ok();
  pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") ok(); });
  setTimeout(ok, 3000);
});

const SOUND_FLOOR_MS = 80;  // the browser's sound buffer holds at least this much (Chromium's jitterBufferTarget)

// the details behind the plain status line, for a hover
const details = (m) => [
  `network: ${m.device}`, `picture: ${m.width}x${m.height}`, m.step > 1 ? `network on every ${m.step}nd frame` : "",
  m.source ? `face: ${m.source}` : "", m.enhance ? `mouth: ${m.enhance}` : "", m.blink ? `blinks: ${m.blink}` : "",
  m.note ? `speed: ${m.note}` : "",
].filter(Boolean).join("\n");

export function mount(root, prefix) {
  const $ = (c) => root.querySelector(c);
  const video = $(".lipsync-live-video");
  const status = $(".lipsync-live-status");
  let pc = null, id = null, ping = null, mic = null, poll = null, intro = "", ended = false;
  let connected = false, shown = null;  // the media flows; the session's last mode, as the server said
  const say = (text, title = "") => { status.textContent = text; status.title = title; };
  // "Live" (and what to do) only once the media flows: speech before that would be lost
  const show = (m) => {
    shown = m;
    if (connected) say(`Live: ${m.summary}. ${intro}`, details(m));
    else say(`Connecting to the avatar (${m.summary})...`, details(m));
  };
  const buttons = (running, mode) => {
    $(".lipsync-live-stop").disabled = !running;
    $(".lipsync-live-say").disabled = !running || mode !== "text" || !connected;
    $(".lipsync-live-mic").disabled = running;
    $(".lipsync-live-text").disabled = running;
  };

  async function stop() {
    if (ping) clearInterval(ping);
    if (poll) clearInterval(poll);
    ping = poll = null;
    if (id) fetch(`${prefix}/${id}`, {method: "DELETE"}).catch(() => {});
    if (pc) pc.close();
    if (mic) mic.getTracks().forEach((t) => t.stop());
    pc = id = mic = shown = null;
    connected = false;
    buttons(false);
  }

  async function start(mode) {
    await stop();
    ended = false;
    const file = $(".lipsync-live-face").files[0];
    if (file && !$(".lipsync-live-consent").checked) {
      say("Tick the consent box first: a face of your own choosing may only be used with the right to use " +
          "that person's likeness.");
      return;
    }
    buttons(true, "");
    $(".lipsync-live-stop").disabled = true;
    say("Connecting...");
    try {
      const cfg = await (await fetch(`${prefix}/config`)).json();
      pc = new RTCPeerConnection({iceServers: cfg.iceServers, iceTransportPolicy: cfg.iceTransportPolicy || "all"});
      const stream = new MediaStream();
      pc.ontrack = (e) => {
        // a floor under the sound's buffer: the voice leaves with its picture, and the first pictures of an
        // utterance may leave late on a busy server after a quiet, evenly paced stretch (see opus.py)
        if (e.track.kind === "audio" && "jitterBufferTarget" in e.receiver) e.receiver.jitterBufferTarget = SOUND_FLOOR_MS;
        stream.addTrack(e.track);
        video.srcObject = stream;
      };
      const dc = pc.createDataChannel("keepalive");
      dc.onopen = () => { ping = setInterval(() => { if (dc.readyState === "open") dc.send("ping"); }, 1000); };
      dc.onmessage = (e) => {  // the server says why it ends a session (a time limit, shutdown)
        let note = null;
        try { note = JSON.parse(e.data); } catch (err) { return; }
        if (note && note.type === "ended") { ended = true; stop(); say(note.message); }
      };
      if (mode === "mic") {
        mic = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true, noiseSuppression: true}});
        pc.addTransceiver(mic.getAudioTracks()[0], {direction: "sendrecv"});
      } else {
        pc.addTransceiver("audio", {direction: "recvonly"});
      }
      pc.addTransceiver("video", {direction: "recvonly"});
      await pc.setLocalDescription(await pc.createOffer());
      let face = {};
      if (file) {  // sent as a data URL; the server sniffs the format itself
        const isImage = file.type.startsWith("image/");
        if (!isImage) say("Reading the video (a long one takes a few seconds)...");
        const url = await readAsDataURL(file);
        const data = url.replace(/^data:[^;,]*/, isImage ? "data:image/any" : "data:video/any");
        face = isImage ? {image: data} : {video: data};
        face.consent = $(".lipsync-live-consent").checked;
      }
      await gathered(pc);
      const r = await fetch(`${prefix}/offer`, {method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer", mode, ...face})});
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) { await stop(); say(answer.error || `Could not start (${r.status}).`); return; }
      id = answer.id;
      window.lipsyncLive = {pc, mic, id};  // for the page's own checks (the browser tests read it)
      pc.onconnectionstatechange = () => {
        const state = pc && pc.connectionState;
        if (state === "connected" && !connected) {
          connected = true;
          buttons(true, mode);
          if (shown) show(shown);
        } else if (!ended && ["failed", "closed"].includes(state)) {
          const never = !connected;
          stop();
          say(never ? "Could not connect to the avatar: the network between you and the server blocks the " +
                      "media (the server may need a TURN relay; see the README's Live section)."
                    : "Disconnected.");
        }
      };
      await pc.setRemoteDescription({sdp: answer.sdp, type: answer.type});
      buttons(true, mode);
      intro = mode === "mic" ? "Speak: the avatar repeats what you say." : "Type a sentence and press Say it.";
      if (answer.max_s) intro += ` A session lasts up to ${Math.round(answer.max_s / 60)} min.`;
      show(answer.mode);
      poll = setInterval(async () => {  // the speed policy may change what runs after the first second
        if (!id) return;
        const s = await fetch(`${prefix}/${id}`).catch(() => null);
        if (s && s.ok) show((await s.json()).mode);
        else if (s && s.status === 410 && !ended) {  // its machine stopped (a cluster's worker): say so, plainly
          ended = true;
          const why = (await s.json().catch(() => ({}))).error;
          stop(); say(why || "The live session ended; start again.");
        }
      }, 2000);
    } catch (err) {
      await stop();
      say(`Could not start: ${err.message || err}`);
    }
  }

  $(".lipsync-live-mic").addEventListener("click", () => start("mic"));
  $(".lipsync-live-text").addEventListener("click", () => start("text"));
  $(".lipsync-live-stop").addEventListener("click", () => { stop(); say("Stopped."); });
  $(".lipsync-live-say").addEventListener("click", async () => {
    if (!id) return;
    const r = await fetch(`${prefix}/${id}/say`, {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({text: $(".lipsync-live-words").value, voice: $(".lipsync-live-voice").value})});
    if (!r.ok) say((await r.json().catch(() => ({}))).error || `Could not say it (${r.status}).`);
  });
  window.addEventListener("beforeunload", stop);
}

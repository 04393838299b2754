// A Trystero 0.25 peer in a page, bundled by driver.mjs. The driver calls window.genos.*;
// everything the room does is reported through window.report (set by the driver).
import {joinRoom, selfId} from 'trystero/nostr'

const checksum = bytes => {
  let sum = 0
  for (const b of bytes) sum = (sum * 31 + b) % 1000000007
  return sum
}

const pattern = n => Uint8Array.from({length: n}, (_, i) => i % 251)

let room = null
const actions = {}
let localStream = null

window.genos = {
  join: ({relay, app, room: roomId, password}) => {
    const config = {
      appId: app,
      relayConfig: {urls: [relay]},
      rtcConfig: {iceServers: []},
      _test_only_mdnsHostFallbackToLoopback: true
    }
    if (password) config.password = password
    room = joinRoom(config, roomId, {
      onJoinError: e => window.report({ev: 'error', peer: e.peerId, error: e.error})
    })
    room.onPeerJoin = peer => window.report({ev: 'join', peer})
    room.onPeerTrack = (track, stream, peer, metadata) =>
      window.report({ev: 'track', peer, kind: track.kind, metadata})
    room.onPeerLeave = peer => window.report({ev: 'leave', peer})
    for (const name of ['chat', 'file']) {
      const action = room.makeAction(name)
      action.onMessage = (data, {peerId, metadata}) => {
        const message = {ev: 'message', peer: peerId, action: name, metadata}
        if (data instanceof Uint8Array) {
          message.bytes = data.length
          message.checksum = checksum(data)
        } else message.data = data
        window.report(message)
      }
      let progress = 0
      action.onReceiveProgress = (p, {peerId}) => {
        progress += 1
        if (p >= 1) window.report({ev: 'progress', peer: peerId, action: name, updates: progress})
      }
      actions[name] = action
    }
    return selfId
  },
  send: async ({action, data, bytes, metadata}) => {
    const payload = bytes === undefined ? data : pattern(bytes)
    let updates = 0
    await actions[action].send(payload, {metadata, onProgress: () => (updates += 1)})
    return updates
  },
  ping: peer => room.ping(peer),
  // Chromium's fake camera and microphone (flags set by the driver), added as one stream.
  media: async ({metadata}) => {
    localStream = await navigator.mediaDevices.getUserMedia({
      video: {width: 320, height: 240, frameRate: 30},
      audio: true
    })
    await Promise.all(room.addStream(localStream, {metadata}))
    return localStream.getTracks().map(track => track.kind)
  },
  // What the page's connections received and sent, from getStats.
  mediaStats: async () => {
    const out = {framesDecoded: 0, videoPackets: 0, audioPackets: 0, pliReceived: 0}
    for (const pc of Object.values(room.getPeers())) {
      const stats = await pc.getStats()
      stats.forEach(r => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') {
          out.framesDecoded += r.framesDecoded ?? 0
          out.videoPackets += r.packetsReceived ?? 0
        }
        if (r.type === 'inbound-rtp' && r.kind === 'audio') out.audioPackets += r.packetsReceived ?? 0
        if (r.type === 'outbound-rtp' && r.kind === 'video') out.pliReceived += r.pliCount ?? 0
      })
    }
    return out
  },
  leave: async () => {
    await room.leave()
    return true
  }
}

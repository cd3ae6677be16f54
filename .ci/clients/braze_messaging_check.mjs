// Drives eddy's sending with the third-party `braze-api` (npm): messages.send (with an email
// template), canvas.trigger.send, campaigns.trigger.send, transactional sends, send ids, schedules, campaign lists, and the
// subscription and email endpoints; messages are checked where they land (a webhook receiver
// started here, and aiosmtpd writing what it accepts to SMTP_LOG).
// Usage: node braze_messaging_check.mjs BASE_URL ADMIN_TOKEN REST_KEY SMTP_PORT SMTP_LOG
import { Braze } from 'braze-api'
import http from 'node:http'
import fs from 'node:fs'

const [url, admin, key, smtpPort, smtpLog] = process.argv.slice(2)
const braze = new Braze(url, key)

function check(condition, message) {
  if (!condition) {
    console.error(`braze messaging check failed: ${message}`)
    process.exit(1)
  }
}
const show = (v) => JSON.stringify(v)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const received = []
const receiver = http.createServer((req, res) => {
  let body = ''
  req.on('data', (c) => (body += c))
  req.on('end', () => {
    received.push({ path: req.url, body })
    res.writeHead(200).end('ok')
  })
})
await new Promise((r) => receiver.listen(0, '127.0.0.1', r))
const hook = `http://127.0.0.1:${receiver.address().port}`

async function adminCall(method, path, body) {
  const r = await fetch(`${url}/eddy/v1/workspaces/default${path}`, {
    method,
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await r.text()
  check(r.ok, `${method} ${path}: ${r.status} ${text}`)
  return text ? JSON.parse(text) : null
}

async function waitFor(what, condition) {
  for (let i = 0; i < 300; i++) {
    if (condition()) return
    await sleep(50)
  }
  check(false, `timed out waiting for ${what}`)
}

// The receiver is on loopback: webhooks reach a private address only when the workspace lists it.
await adminCall('PUT', '/connected-content', { allowed_hosts: ['127.0.0.1'] })
await adminCall('PUT', '/email', { smtp_url: `smtp://127.0.0.1:${smtpPort}` })
await adminCall('PUT', '/subscription-groups/ci-news', { name: 'CI news' })
const webhookCampaign = await adminCall('POST', '/campaigns', {
  name: 'CI webhook', tags: ['ci'],
  messages: { webhook: { url: `${hook}/trigger/{{\${user_id}}}`, body: 'code={{api_trigger_properties.${code}}} name={{${first_name}}}' } },
})
const emailCampaign = await adminCall('POST', '/campaigns', {
  name: 'CI receipt',
  messages: { email: { from: 'CI Shop <shop@ci.test>', subject: 'Receipt {{api_trigger_properties.${order}}}', body: '<p>Thanks {{${first_name}}}</p>' } },
})

await braze.users.track({ attributes: [
  { external_id: 'm-1', first_name: 'Ann', email: 'ann@ci.test' },
  { external_id: 'm-3', first_name: 'Cy', email: 'cy@ci.test' },
] })

// messages.send with an inline webhook.
const sent = await braze.messages.send({ external_user_ids: ['m-1'], messages: { webhook: { url: `${hook}/inline`, body: 'hi {{${first_name}}}' } } })
check(sent.message === 'success' && typeof sent.dispatch_id === 'string', `messages.send ${show(sent)}`)
await waitFor('the inline webhook', () => received.some((r) => r.path === '/inline'))
check(received.find((r) => r.path === '/inline').body === 'hi Ann', `inline body ${show(received)}`)

// campaigns.trigger.send creating a recipient from its attributes.
const triggered = await braze.campaigns.trigger.send({
  campaign_id: webhookCampaign.id, trigger_properties: { code: 'C1' },
  recipients: [{ external_user_id: 'm-2', send_to_existing_only: false, attributes: { first_name: 'Bo' } }],
})
check(triggered.message === 'success' && triggered.dispatch_id, `trigger ${show(triggered)}`)
await waitFor('the trigger webhook', () => received.some((r) => r.path === '/trigger/m-2'))
check(received.find((r) => r.path === '/trigger/m-2').body === 'code=C1 name=Bo', `trigger body ${show(received)}`)

// A transactional email through aiosmtpd; a repeated external_send_id sends nothing.
const tx = await braze.transactional.v1.campaigns.send(emailCampaign.id, {
  external_send_id: 'order-42', trigger_properties: { order: '42' }, recipient: { external_user_id: 'm-3' },
})
check(tx.status === 'queued' && tx.dispatch_id, `transactional ${show(tx)}`)
const again = await braze.transactional.v1.campaigns.send(emailCampaign.id, {
  external_send_id: 'order-42', trigger_properties: { order: '42' }, recipient: { external_user_id: 'm-3' },
})
check(again.dispatch_id === tx.dispatch_id, `deduplicated ${show(again)}`)
const mails = () => (fs.existsSync(smtpLog) ? fs.readFileSync(smtpLog, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [])
await waitFor('the receipt email', () => mails().some((m) => m.to.includes('cy@ci.test')))
const mail = mails().find((m) => m.to.includes('cy@ci.test'))
check(mail.data.includes('Subject: Receipt 42') && mail.data.includes('List-Unsubscribe:'), `email ${mail.data}`)
await sleep(300)
check(mails().filter((m) => m.to.includes('cy@ci.test')).length === 1, 'one receipt email')

// A canvas: a message, a one-second delay, a split on the plan, a message; entered through
// canvas.trigger.send with each user's context.
await braze.users.track({ attributes: [{ external_id: 'm-1', plan: 'gold' }, { external_id: 'm-3', plan: 'free' }] })
const canvas = await adminCall('POST', '/canvases', {
  name: 'CI journey', steps: [
    { type: 'message', messages: { webhook: { url: `${hook}/canvas/hi/{{\${user_id}}}`, body: '{{context.${code}}}' } } },
    { type: 'delay', seconds: 1 },
    { type: 'split', filter: { attribute: 'plan', op: 'equals', value: 'gold' } },
    { type: 'message', messages: { webhook: { url: `${hook}/canvas/gold/{{\${user_id}}}` } } },
  ],
})
const entered = await braze.canvas.trigger.send({
  canvas_id: canvas.id,
  recipients: [{ external_user_id: 'm-1', context: { code: 'G1' } }, { external_user_id: 'm-3', context: { code: 'F3' } }],
})
check(entered.message === 'success' && entered.dispatch_id, `canvas.trigger.send ${show(entered)}`)
await waitFor('the canvas messages', () => received.filter((r) => r.path.startsWith('/canvas/')).length >= 3)
await sleep(300)
const journey = received.filter((r) => r.path.startsWith('/canvas/')).map((r) => `${r.path}=${r.body}`).sort()
check(show(journey) === show(['/canvas/gold/m-1=', '/canvas/hi/m-1=G1', '/canvas/hi/m-3=F3']), `canvas journey ${show(journey)}`)
const listed = await braze.canvas.list()
check(listed.canvases.some((c) => c.id === canvas.id && c.name === 'CI journey'), `canvas.list ${show(listed)}`)

// An email template that includes a content block, both made over REST, named by a send.
await braze.templates.content_blocks.create({ name: 'ci_signoff', content: 'Cheers, the CI shop' })
const template = await braze.templates.email_templates.create({
  template_name: 'ci_news', subject: 'News for {{${first_name}}}', body: '<p>{{content_blocks.${ci_signoff}}}</p>',
})
const templated = await braze.messages.send({
  external_user_ids: ['m-1'],
  messages: { email: { from: 'CI Shop <shop@ci.test>', email_template_id: template.email_template_id } },
})
check(templated.message === 'success', `send with an email template ${show(templated)}`)
await waitFor('the templated email', () => mails().some((m) => m.to.includes('ann@ci.test') && m.data.includes('News for Ann')))
const news = mails().find((m) => m.data.includes('News for Ann'))
// The text part is the block alone, base64-encoded as eddy sends every part.
const signoff = Buffer.from('Cheers, the CI shop').toString('base64')
check(news.data.includes(signoff), `the content block in the templated email ${news.data}`)

const sendId = await braze.sends.id.create({ campaign_id: webhookCampaign.id, send_id: 'ci-send' })
check(sendId.send_id === 'ci-send', `sends.id.create ${show(sendId)}`)

// Campaign export endpoints.
const list = await braze.campaigns.list()
check(list.campaigns.length === 2 && list.campaigns.every((c) => c.is_api_campaign), `campaigns.list ${show(list)}`)
const details = await braze.campaigns.details({ campaign_id: webhookCampaign.id })
check(details.name === 'CI webhook' && details.channels[0] === 'webhook', `campaigns.details ${show(details)}`)

// Schedules: create far ahead, listed, moved, deleted.
const later = new Date(Date.now() + 3600_000).toISOString()
const scheduled = await braze.messages.schedule.create({ external_user_ids: ['m-1'], schedule: { time: later }, messages: { webhook: { url: `${hook}/never` } } })
check(scheduled.schedule_id && scheduled.dispatch_id, `schedule.create ${show(scheduled)}`)
const upcoming = await braze.messages.scheduled_broadcasts({ end_time: new Date(Date.now() + 7200_000).toISOString() })
check(upcoming.scheduled_broadcasts.some((b) => b.dispatch_id === scheduled.dispatch_id), `scheduled_broadcasts ${show(upcoming)}`)
const movedTo = new Date(Date.now() + 5400_000)
const updated = await braze.messages.schedule.update({ schedule_id: scheduled.schedule_id, schedule: { time: movedTo.toISOString() } })
check(updated.message === 'success', `schedule.update ${show(updated)}`)
const moved = await braze.messages.scheduled_broadcasts({ end_time: new Date(Date.now() + 7200_000).toISOString() })
const movedEntry = moved.scheduled_broadcasts.find((b) => b.dispatch_id === scheduled.dispatch_id)
check(movedEntry && Math.abs(Date.parse(movedEntry.send_at) - movedTo.getTime()) < 1000, `schedule.update moved it ${show(moved)}`)
const deleted = await braze.messages.schedule.delete({ schedule_id: scheduled.schedule_id })
check(deleted.message === 'success', `schedule.delete ${show(deleted)}`)
const after = await braze.messages.scheduled_broadcasts({ end_time: new Date(Date.now() + 7200_000).toISOString() })
check(!after.scheduled_broadcasts.some((b) => b.dispatch_id === scheduled.dispatch_id), `schedule.delete removed it ${show(after)}`)
const triggerSchedule = await braze.campaigns.trigger.schedule.create({ campaign_id: webhookCampaign.id, recipients: [{ external_user_id: 'm-1' }], schedule: { time: later } })
check(triggerSchedule.schedule_id, `trigger schedule ${show(triggerSchedule)}`)
const triggerDeleted = await braze.campaigns.trigger.schedule.delete({ campaign_id: webhookCampaign.id, schedule_id: triggerSchedule.schedule_id })
check(triggerDeleted.message === 'success', `trigger schedule delete ${show(triggerDeleted)}`)

// Subscription groups, v1 and v2.
const set = await braze.subscription.status.set({ subscription_group_id: 'ci-news', subscription_state: 'subscribed', external_id: ['m-1'] })
check(set.message === 'success', `subscription.status.set ${show(set)}`)
await braze.v2.subscription.status.set({ subscription_groups: [{ subscription_group_id: 'ci-news', subscription_state: 'unsubscribed', emails: ['cy@ci.test'] }] })
const status = await braze.subscription.status.get({ subscription_group_id: 'ci-news', external_id: ['m-1', 'm-3'] })
check(status.status['m-1'] === 'Subscribed' && status.status['m-3'] === 'Unsubscribed', `subscription.status.get ${show(status)}`)
const users = await braze.subscription.user.status({ external_id: ['m-1'] })
check(users.users[0].subscription_groups[0].status === 'Subscribed', `subscription.user.status ${show(users)}`)

// Email address lists.
check((await braze.email.blacklist({ email: ['ann@ci.test'] })).message === 'success', 'email.blacklist')
check((await braze.email.bounce.remove({ email: 'ann@ci.test' })).message === 'success', 'email.bounce.remove')
check((await braze.email.spam.remove({ email: 'ann@ci.test' })).message === 'success', 'email.spam.remove')
const ann = await braze.users.export.ids({ external_ids: ['m-1'] })
check(ann.users[0].email_subscribe === 'unsubscribed', `blocklisted user unsubscribed ${show(ann)}`)

receiver.close()
console.log('braze-api messaging: send, trigger, transactional, schedules, campaigns, subscriptions and email lists as Braze answers them')

// Drives `eddy serve` with the third-party `braze-api` (npm) and checks the profiles.
// Usage: node braze_api_check.mjs BASE_URL REST_KEY
import { Braze } from 'braze-api'

const [url, key] = process.argv.slice(2)
const braze = new Braze(url, key)

function check(condition, message) {
  if (!condition) {
    console.error(`braze-api check failed: ${message}`)
    process.exit(1)
  }
}

const show = (v) => JSON.stringify(v)

const tracked = await braze.users.track({
  attributes: [{ external_id: 'js-1', first_name: 'Grace', favorite: ['tea'], dob: '1906-12-09' }],
  events: [{ external_id: 'js-1', name: 'opened', time: '2024-01-01T00:00:00Z', properties: { n: 1 } }],
})
check(tracked.message === 'success' && tracked.attributes_processed === 1, `track ${show(tracked)}`)

const alias = { alias_name: 'amp-42', alias_label: 'amplitude_id' }
const created = await braze.users.alias.new({ user_aliases: [alias] })
check(created.message === 'success' && created.aliases_processed === 1, `alias new ${show(created)}`)
await braze.users.track({ attributes: [{ user_alias: alias, from_alias: 'yes' }] })
await braze.users.track({ events: [{ user_alias: alias, name: 'opened', time: '2023-06-01T00:00:00Z' }] })

const identified = await braze.users.identify({ aliases_to_identify: [{ external_id: 'js-1', user_alias: alias }] })
check(identified.message === 'success', `identify ${show(identified)}`)

let exported = await braze.users.export.ids({ external_ids: ['js-1'] })
let user = exported.users[0]
check(user.first_name === 'Grace', `first_name ${show(user)}`)
check(user.dob === '1906-12-09', `dob ${show(user)}`)
check(user.custom_attributes.from_alias === 'yes', `alias attributes merged ${show(user)}`)
check(user.custom_events[0].count === 2, `event history merged ${show(user)}`)
check(user.user_aliases.length === 1 && user.user_aliases[0].alias_name === 'amp-42', `alias moved ${show(user)}`)

await braze.users.track({ attributes: [{ external_id: 'js-2', only_on_two: 7 }] })
const merged = await braze.users.merge({
  merge_updates: [{ identifier_to_merge: { external_id: 'js-2' }, identifier_to_keep: { external_id: 'js-1' } }],
})
check(merged.message === 'success', `merge ${show(merged)}`)
exported = await braze.users.export.ids({ external_ids: ['js-1', 'js-2'] })
check(exported.users.length === 1 && exported.users[0].custom_attributes.only_on_two === 7, `merge result ${show(exported)}`)
check(show(exported.invalid_user_ids) === show(['js-2']), `merged user is gone ${show(exported)}`)

const renamed = await braze.users.alias.update({
  alias_updates: [{ alias_label: 'amplitude_id', old_alias_name: 'amp-42', new_alias_name: 'amp-43' }],
})
check(renamed.message === 'success', `alias update ${show(renamed)}`)

// External id renames: the old id keeps naming the user until it is removed.
await braze.users.track({ attributes: [{ external_id: 'js-old', plan: 'gold' }] })
const renamedIds = await braze.users.external_ids.rename({
  external_id_renames: [{ current_external_id: 'js-old', new_external_id: 'js-new' }],
})
check(show(renamedIds.external_ids) === show(['js-old']), `rename ${show(renamedIds)}`)
exported = await braze.users.export.ids({ external_ids: ['js-old'] })
check(exported.users[0]?.external_id === 'js-new', `the old id names the renamed user ${show(exported)}`)
const removedIds = await braze.users.external_ids.remove({ external_ids: ['js-old'] })
check(show(removedIds.removed_ids) === show(['js-old']), `remove ${show(removedIds)}`)

// Content blocks and email templates.
const block = await braze.templates.content_blocks.create({
  name: 'js_footer', description: 'Footer', content: '<p>Bye {{${first_name}}}</p>', state: 'active', tags: ['js'],
})
check(block.liquid_tag === '{{content_blocks.${js_footer}}}', `content block ${show(block)}`)
const blockInfo = await braze.templates.content_blocks.get({ content_block_id: block.content_block_id })
check(blockInfo.name === 'js_footer' && blockInfo.content_type === 'html', `content block info ${show(blockInfo)}`)
const blocks = await braze.templates.content_blocks.list({ limit: 10 })
check(blocks.content_blocks.some((b) => b.content_block_id === block.content_block_id), `content blocks ${show(blocks)}`)
const template = await braze.templates.email_templates.create({
  template_name: 'js_welcome', subject: 'Hi', body: 'Hello {{content_blocks.${js_footer}}}', tags: ['js'],
})
await braze.templates.email_templates.update({ email_template_id: template.email_template_id, subject: 'Hello' })
const templateInfo = await braze.templates.email_templates.get({ email_template_id: template.email_template_id })
check(templateInfo.subject === 'Hello' && templateInfo.template_name === 'js_welcome', `email template ${show(templateInfo)}`)
const templates = await braze.templates.email_templates.list({})
check(templates.templates.some((t) => t.email_template_id === template.email_template_id), `email templates ${show(templates)}`)

// Catalogs: braze-api reads them (and follows the Link header); they are written as Braze's
// documentation shows, since the client has no calls for writing.
const write = async (method, path, body) => {
  const response = await fetch(url + path, {
    method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
  })
  check(response.ok, `${method} ${path}: ${response.status} ${await response.text()}`)
}
await write('POST', '/catalogs', { catalogs: [{ name: 'js_games', description: 'Games', fields: [
  { name: 'id', type: 'string' }, { name: 'title', type: 'string' }, { name: 'price', type: 'number' }] }] })
for (let start = 0; start < 120; start += 50) {
  const items = []
  for (let i = start; i < Math.min(start + 50, 120); i++) items.push({ id: `g${String(i).padStart(3, '0')}`, title: `Game ${i}`, price: i })
  await write('PUT', '/catalogs/js_games/items', { items })
}
const catalogList = await braze.catalogs.synchronous.list()
check(catalogList.catalogs.some((c) => c.name === 'js_games' && c.num_items === 120), `catalogs ${show(catalogList)}`)
let count = 0
for await (const item of braze.catalogs.synchronous.items({ catalog_name: 'js_games' })) {
  check(item.title === `Game ${Number(item.id.slice(1))}`, `item ${show(item)}`)
  count++
}
check(count === 120, `every catalog item through the Link pages, got ${count}`)
const game = await braze.catalogs.synchronous.item({ catalog_name: 'js_games', item_id: 'g007' })
check(game.items[0].price === 7, `catalog item ${show(game)}`)

const deleted = await braze.users.delete({ external_ids: ['js-1'] })
check(deleted.deleted === 1, `delete ${show(deleted)}`)
exported = await braze.users.export.ids({ external_ids: ['js-1'] })
check(exported.users.length === 0, `deleted user still exported ${show(exported)}`)
console.log('braze-api (npm): all checks passed')

//! Country and language code tables for the `country` and `language` profile fields.

/// ISO 3166-1 alpha-2 codes with their English short names.
const COUNTRIES: &str = "AD Andorra|AE United Arab Emirates|AF Afghanistan|AG Antigua and Barbuda|AI Anguilla|AL Albania|AM Armenia|AO Angola|AQ Antarctica|AR Argentina|AS American Samoa|AT Austria|AU Australia|AW Aruba|AX Aland Islands|AZ Azerbaijan|BA Bosnia and Herzegovina|BB Barbados|BD Bangladesh|BE Belgium|BF Burkina Faso|BG Bulgaria|BH Bahrain|BI Burundi|BJ Benin|BL Saint Barthelemy|BM Bermuda|BN Brunei|BO Bolivia|BQ Bonaire|BR Brazil|BS Bahamas|BT Bhutan|BV Bouvet Island|BW Botswana|BY Belarus|BZ Belize|CA Canada|CC Cocos Islands|CD Democratic Republic of the Congo|CF Central African Republic|CG Congo|CH Switzerland|CI Cote d'Ivoire|CK Cook Islands|CL Chile|CM Cameroon|CN China|CO Colombia|CR Costa Rica|CU Cuba|CV Cabo Verde|CW Curacao|CX Christmas Island|CY Cyprus|CZ Czechia|DE Germany|DJ Djibouti|DK Denmark|DM Dominica|DO Dominican Republic|DZ Algeria|EC Ecuador|EE Estonia|EG Egypt|EH Western Sahara|ER Eritrea|ES Spain|ET Ethiopia|FI Finland|FJ Fiji|FK Falkland Islands|FM Micronesia|FO Faroe Islands|FR France|GA Gabon|GB United Kingdom|GD Grenada|GE Georgia|GF French Guiana|GG Guernsey|GH Ghana|GI Gibraltar|GL Greenland|GM Gambia|GN Guinea|GP Guadeloupe|GQ Equatorial Guinea|GR Greece|GS South Georgia and the South Sandwich Islands|GT Guatemala|GU Guam|GW Guinea-Bissau|GY Guyana|HK Hong Kong|HM Heard Island and McDonald Islands|HN Honduras|HR Croatia|HT Haiti|HU Hungary|ID Indonesia|IE Ireland|IL Israel|IM Isle of Man|IN India|IO British Indian Ocean Territory|IQ Iraq|IR Iran|IS Iceland|IT Italy|JE Jersey|JM Jamaica|JO Jordan|JP Japan|KE Kenya|KG Kyrgyzstan|KH Cambodia|KI Kiribati|KM Comoros|KN Saint Kitts and Nevis|KP North Korea|KR South Korea|KW Kuwait|KY Cayman Islands|KZ Kazakhstan|LA Laos|LB Lebanon|LC Saint Lucia|LI Liechtenstein|LK Sri Lanka|LR Liberia|LS Lesotho|LT Lithuania|LU Luxembourg|LV Latvia|LY Libya|MA Morocco|MC Monaco|MD Moldova|ME Montenegro|MF Saint Martin|MG Madagascar|MH Marshall Islands|MK North Macedonia|ML Mali|MM Myanmar|MN Mongolia|MO Macao|MP Northern Mariana Islands|MQ Martinique|MR Mauritania|MS Montserrat|MT Malta|MU Mauritius|MV Maldives|MW Malawi|MX Mexico|MY Malaysia|MZ Mozambique|NA Namibia|NC New Caledonia|NE Niger|NF Norfolk Island|NG Nigeria|NI Nicaragua|NL Netherlands|NO Norway|NP Nepal|NR Nauru|NU Niue|NZ New Zealand|OM Oman|PA Panama|PE Peru|PF French Polynesia|PG Papua New Guinea|PH Philippines|PK Pakistan|PL Poland|PM Saint Pierre and Miquelon|PN Pitcairn|PR Puerto Rico|PS Palestine|PT Portugal|PW Palau|PY Paraguay|QA Qatar|RE Reunion|RO Romania|RS Serbia|RU Russia|RW Rwanda|SA Saudi Arabia|SB Solomon Islands|SC Seychelles|SD Sudan|SE Sweden|SG Singapore|SH Saint Helena|SI Slovenia|SJ Svalbard and Jan Mayen|SK Slovakia|SL Sierra Leone|SM San Marino|SN Senegal|SO Somalia|SR Suriname|SS South Sudan|ST Sao Tome and Principe|SV El Salvador|SX Sint Maarten|SY Syria|SZ Eswatini|TC Turks and Caicos Islands|TD Chad|TF French Southern Territories|TG Togo|TH Thailand|TJ Tajikistan|TK Tokelau|TL Timor-Leste|TM Turkmenistan|TN Tunisia|TO Tonga|TR Turkey|TT Trinidad and Tobago|TV Tuvalu|TW Taiwan|TZ Tanzania|UA Ukraine|UG Uganda|UM United States Minor Outlying Islands|US United States|UY Uruguay|UZ Uzbekistan|VA Holy See|VC Saint Vincent and the Grenadines|VE Venezuela|VG British Virgin Islands|VI U.S. Virgin Islands|VN Vietnam|VU Vanuatu|WF Wallis and Futuna|WS Samoa|YE Yemen|YT Mayotte|ZA South Africa|ZM Zambia|ZW Zimbabwe";

/// Other names people send for a country.
const COUNTRY_ALIASES: &str = "USA US|United States of America US|America US|U.S. US|U.S.A. US|UK GB|Great Britain GB|England GB|Scotland GB|Wales GB|Britain GB|Russian Federation RU|Korea KR|Republic of Korea KR|Czech Republic CZ|Holland NL|The Netherlands NL|Ivory Coast CI|Viet Nam VN|Turkiye TR|Macedonia MK|Swaziland SZ|Cape Verde CV|Burma MM|Vatican VA|UAE AE|Deutschland DE|Espana ES|España ES|Brasil BR|Italia IT|Nippon JP|Schweiz CH|Suisse CH|Osterreich AT|Österreich AT|Mexique MX|Méxique MX|México MX";

/// ISO 639-1 language codes.
const LANGUAGES: &str = "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu";

/// Maps a country given as a code or a name to its ISO 3166-1 alpha-2 code, or `None`.
pub fn country_code(input: &str) -> Option<&'static str> {
    let wanted = fold(input);
    if wanted.is_empty() {
        return None;
    }
    for entry in COUNTRIES.split('|') {
        let (code, name) = entry.split_at(2);
        if fold(code) == wanted || fold(name.trim()) == wanted {
            return Some(code);
        }
    }
    for entry in COUNTRY_ALIASES.split('|') {
        let (name, code) = entry.rsplit_once(' ')?;
        if fold(name) == wanted {
            return COUNTRIES.split('|').map(|e| &e[..2]).find(|c| *c == code);
        }
    }
    None
}

/// Maps a language (`en`, `EN`, `en-US`, `en_GB`) to its ISO 639-1 code, or `None`.
pub fn language_code(input: &str) -> Option<&'static str> {
    let lower = input.trim().to_ascii_lowercase();
    let primary = lower.split(['-', '_']).next().unwrap_or("");
    LANGUAGES.split(' ').find(|code| *code == primary)
}

fn fold(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries() {
        assert_eq!(country_code("US"), Some("US"));
        assert_eq!(country_code("us"), Some("US"));
        assert_eq!(country_code("Australia"), Some("AU"));
        assert_eq!(country_code("united kingdom"), Some("GB"));
        assert_eq!(country_code("USA"), Some("US"));
        assert_eq!(country_code("Deutschland"), Some("DE"));
        assert_eq!(country_code("Atlantis"), None);
        assert_eq!(country_code(""), None);
        assert_eq!(COUNTRIES.split('|').count(), 249);
    }

    #[test]
    fn languages() {
        assert_eq!(language_code("en"), Some("en"));
        assert_eq!(language_code("pt-BR"), Some("pt"));
        assert_eq!(language_code("FR"), Some("fr"));
        assert_eq!(language_code("xx"), None);
        assert_eq!(LANGUAGES.split(' ').count(), 184);
    }
}
